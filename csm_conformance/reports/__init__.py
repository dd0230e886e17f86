"""What people and tools read: the accuracy and performance reports (console, JSON,
Allure, audio) and the JSON Schema both follow (schemas/, package data)."""

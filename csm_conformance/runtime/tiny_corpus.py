"""Training text for the tiny model's tokenizer (used only to regenerate assets/tokenizer.json)."""

_ENGLISH = """
Hello, how are you doing today? I am doing well, thank you for asking.
The quick brown fox jumps over the lazy dog near the quiet river bank.
Could you please tell me the way to the nearest train station?
We are testing a conversational speech model on a new accelerator this week.
The weather is lovely this morning, so let us take a walk in the park.
She said that the meeting had been moved to Thursday at half past three.
Numbers matter: 1, 2, 3, 42, 1024, 3.14159, 2025, and 100 percent.
Punctuation too: commas, semicolons; colons: dashes - and quotes "like this"!
What time is it? It is a quarter to nine in the evening, more or less.
I think the results look good, but we should run the benchmark again.
Please remember to bring your laptop, your charger, and the printed report.
Speech synthesis turns written text into natural sounding audio.
The model generates audio codes frame by frame, twelve and a half frames per second.
Thank you very much for your patience while we finish the upgrade.
Once upon a time there was a small robot who loved to sing songs.
Reading a long paragraph aloud takes time, and the listener needs to follow along.
The conference starts on Monday, the ninth of June, in the main hall.
Can we compare the accuracy of the device against the reference on the CPU?
Latency, throughput and memory are the three figures that operators watch.
Good morning everyone, and welcome to the weekly engineering review.
"""

_CHINESE = """
你好，今天过得怎么样？我很好，谢谢你的关心。
我们正在新的加速器上测试对话语音模型。
今天天气很好，我们去公园散步吧。
请问最近的火车站怎么走？
会议改到星期四下午三点半了。
语音合成把文字变成自然的声音。
模型每秒生成十二点五帧音频编码。
非常感谢大家在升级期间的耐心等待。
从前有一个喜欢唱歌的小机器人。
我们需要比较设备和中央处理器上的精度结果。
延迟、吞吐量和内存是运维人员最关心的三个指标。
早上好，欢迎参加每周的工程评审会议。
北京、上海、深圳和杭州都是重要的城市。
数字也很重要：一、二、三、四十二、一千零二十四。
"""

CORPUS = [line for line in (_ENGLISH + _CHINESE).splitlines() if line.strip()] * 4

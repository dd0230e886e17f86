"""The model on a device: devices (CPU, CUDA, NPU behind one interface), model loading
(a local directory, a hub id, the embedded tiny CSM in assets/), the forward passes and the
fixed-length generation the checks drive (probes), and the clocks of the frame and the host.
Imports the catalogue and the foundation only."""

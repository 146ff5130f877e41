"""edgekv: multimodal LLMs on Jetson-class devices, with KV memory fixed at export time."""

__version__ = "0.1.0"

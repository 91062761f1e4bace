"""kidneyseg.model: building blocks, the configurable 3D U-Net, its input and output contracts (prior channels,
softmax or region outputs), the model folder and its checkpoint format."""

from .blocks import ConvNormAct, Ops, ResidualBlock, StackedBlocks
from .unet import NetworkConfig, UNet, build_unet, count_parameters

__all__ = ["ConvNormAct", "Ops", "ResidualBlock", "StackedBlocks", "NetworkConfig", "UNet", "build_unet",
           "count_parameters"]

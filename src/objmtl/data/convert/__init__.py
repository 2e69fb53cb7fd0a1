"""Converters from common data set layouts into shard sets."""

from objmtl.data.convert.image_folder import convert_image_folder

__all__ = ["convert_image_folder"]

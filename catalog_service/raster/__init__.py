"""The products as a raster service: titiler-pgstac's mosaics of a collection and tiles
of one item, reading only the product store's files."""

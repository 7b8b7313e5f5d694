"""Drawing: boxes on images, grids of samples, plots."""

"""Pure geometry shared by data, models, tasks and export: the top-down pose crop's affine maps
(image <-> crop <-> heatmap) and Gaussian keypoint heatmaps. It imports numpy and torch only."""

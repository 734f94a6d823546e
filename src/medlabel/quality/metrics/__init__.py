"""Pure quality metrics: inter-rater agreement, mask overlap and surface distances, shape
matching and consensus. Numpy in, floats or frozen dataclasses out; no I/O.

See ``docs/quality-metrics.md`` for the definitions and conventions (empty masks, undefined
kappa, surface-distance percentiles).
"""

from medlabel.quality.metrics.agreement import (
    BootstrapResult,
    bootstrap_ci,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    percent_agreement,
    ratings_to_table,
)
from medlabel.quality.metrics.consensus import (
    Plurality,
    StapleResult,
    majority_vote,
    plurality_label,
    staple,
)
from medlabel.quality.metrics.masks import (
    Spacing,
    average_surface_distance,
    dice,
    hausdorff_distance,
    iou,
    per_class,
    surface_dice,
    surface_distances,
    volume_difference,
)
from medlabel.quality.metrics.shapes import (
    Box,
    Match,
    MatchResult,
    Polygon,
    ShapeLike,
    match_shapes,
    shape_iou,
)

__all__ = [
    "BootstrapResult",
    "Box",
    "Match",
    "MatchResult",
    "Plurality",
    "Polygon",
    "ShapeLike",
    "Spacing",
    "StapleResult",
    "average_surface_distance",
    "bootstrap_ci",
    "cohen_kappa",
    "dice",
    "fleiss_kappa",
    "hausdorff_distance",
    "iou",
    "krippendorff_alpha",
    "majority_vote",
    "match_shapes",
    "per_class",
    "percent_agreement",
    "plurality_label",
    "ratings_to_table",
    "shape_iou",
    "staple",
    "surface_dice",
    "surface_distances",
    "volume_difference",
]

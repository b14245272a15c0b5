"""How every RGB-D dataset here stores labels and depth; defined once.

The builders write these conventions and record them in each dataset's
``info.metadata``; the input pipeline, the losses and the metrics read them
from here.
"""

# The label of pixels that count in neither loss nor metrics (uint8 labels
# hold classes 0..254).
IGNORE_LABEL = 255
# Stored depth = metres * DEPTH_SCALE, as uint16 (NYUDv2's convention; the
# official loader multiplies by 1 / 5000).
DEPTH_SCALE = 5000.0

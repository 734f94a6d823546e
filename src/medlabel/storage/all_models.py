"""Import every module that defines tables, so ``Base.metadata`` is complete (Alembic, tests).

A domain that adds tables adds its models module here.
"""

from medlabel.items import models as items_models  # noqa: F401
from medlabel.labeling import models as labeling_models  # noqa: F401
from medlabel.storage import models as foundation_models  # noqa: F401

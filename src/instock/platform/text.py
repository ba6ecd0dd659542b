"""Free text a client may send (reasons, keys, ids of other systems): any characters but
control characters, which have no business there and which PostgreSQL text cannot all hold
(NUL). Validated at the edge, so such input is a 422 naming the field, never a 500.

Narrow it further where it is used: `Annotated[Printable, StringConstraints(max_length=300)]`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"

Printable = Annotated[str, StringConstraints(pattern=NO_CONTROL_CHARACTERS)]

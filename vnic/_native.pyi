# The cffi-compiled data plane (native/build.py) has no Python source and
# cffi gives its objects no static types: this stub lets mypy check the
# callers, with the boundary itself as Any.
from typing import Any

ffi: Any
lib: Any

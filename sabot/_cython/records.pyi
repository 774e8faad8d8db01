from typing import Any, Callable, List, Optional, Sequence, Tuple

def build_records(build: Callable[..., Any], model: type, names: Optional[Tuple[str, ...]],
                  columns: Sequence[List[Any]]) -> List[Any]: ...

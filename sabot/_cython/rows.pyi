from typing import Any, Dict, Optional, Tuple

TASK_STREAMS: Dict[Any, Any]

def current_row() -> Optional[Tuple[Any, Any, int, bool]]: ...

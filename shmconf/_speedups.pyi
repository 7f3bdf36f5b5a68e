from typing import Any

class FastPath:
    _words: memoryview
    _gen: int
    _snapshot: Any
    def get(self) -> Any: ...

def freeze(value: Any) -> Any: ...
def register(frozen_dict: type[dict[str, Any]], frozen_list: type[list[Any]]) -> None: ...

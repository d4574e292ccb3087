ACCEPT4: bool
PIPE2: bool
EVENTFD: bool
PORTABLE: bool

def accept(fd: int) -> int: ...
def pipe() -> tuple[int, int]: ...

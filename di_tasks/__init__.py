"""di_tasks: dependency injection whose resolution scopes own a background-task collector.

Everything public is imported from here; the modules behind it are private.
"""

from ._container import Container as Container
from ._container import TaskErrorHook as TaskErrorHook
from ._errors import BackgroundTaskError as BackgroundTaskError
from ._errors import DependencyCycleError as DependencyCycleError
from ._errors import DITasksError as DITasksError
from ._errors import MissingValueError as MissingValueError
from ._errors import ScopeError as ScopeError
from ._errors import WiringError as WiringError
from ._flush import Flusher as Flusher
from ._flush import FlushStarter as FlushStarter
from ._flush import InProcessFlusher as InProcessFlusher
from ._flush import TaskChecker as TaskChecker
from ._graph import Graph as Graph
from ._graph import Node as Node
from ._graph import ValueNeed as ValueNeed
from ._inspect import Kind as Kind
from ._markers import Depends as Depends
from ._markers import Lifetime as Lifetime
from ._markers import ScopeName as ScopeName
from ._markers import provider as provider
from ._scope import FlushObserver as FlushObserver
from ._scope import Scope as Scope
from ._tasks import BackgroundTasks as BackgroundTasks
from ._tasks import Task as Task
from ._tasks import TaskObserver as TaskObserver
from ._tasks import TaskState as TaskState

__all__ = (
    "BackgroundTaskError",
    "BackgroundTasks",
    "Container",
    "DITasksError",
    "DependencyCycleError",
    "Depends",
    "FlushObserver",
    "FlushStarter",
    "Flusher",
    "Graph",
    "InProcessFlusher",
    "Kind",
    "Lifetime",
    "MissingValueError",
    "Node",
    "Scope",
    "ScopeError",
    "ScopeName",
    "Task",
    "TaskChecker",
    "TaskErrorHook",
    "TaskObserver",
    "TaskState",
    "ValueNeed",
    "WiringError",
    "provider",
)

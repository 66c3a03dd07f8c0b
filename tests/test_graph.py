"""The solved graph users see: nodes in dependency order, the values needed, and who asks for the collector."""

from typing import Annotated

from di_tasks import BackgroundTasks, Container, Depends, Lifetime


def settings(region: str = "eu") -> str:
    return region


def audit(tasks: BackgroundTasks, s: Annotated[str, Depends(settings, scope="app")]) -> str:
    return s


def endpoint(user_id: int, a: Annotated[str, Depends(audit)]) -> str:
    return a


def test_nodes_values_and_task_users() -> None:
    """Nodes come dependencies first; values list what is needed; task_users who asks for BackgroundTasks."""
    graph = Container().solve(endpoint)
    assert [n.name.rsplit(".", 1)[-1] for n in graph.nodes] == ["settings", "audit", "endpoint"]
    assert [n.scope for n in graph.nodes] == [Lifetime.APP, Lifetime.REQUEST, Lifetime.CALL]
    assert [n.scope for n in graph.nodes] == ["app", "request", "call"]
    assert [v.name for v in graph.values] == ["user_id", "region"]  # in the order first met
    assert [v.name for v in graph.required_values] == ["user_id"]
    assert [n.name.rsplit(".", 1)[-1] for n in graph.task_users] == ["audit"]
    assert graph.render("text").endswith("\n")

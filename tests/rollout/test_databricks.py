"""databricks-sdk's real WorkspaceClient against a local peer of the serving-endpoints API."""

from __future__ import annotations

import pytest

from shared.serving.base import InvalidRoutes, ServingError
from shared.serving.databricks import (
    DatabricksServing,
    health_from_metrics,
    parse_prometheus,
    served_entity_name,
)
from tests.rollout.databricks_peer import TOKEN, DatabricksPeer

MODEL = "main.risk.fraud"   # a Unity Catalog three-level name


@pytest.fixture(scope="module")
def peer():
    server = DatabricksPeer().start()
    yield server
    server.stop()


@pytest.fixture
def endpoint(peer, request):
    name = f"fraud-{request.node.name[5:30].replace('_', '-')}"
    peer.register(MODEL, "1", "2", "3")
    peer.create_endpoint(name, MODEL, "1", workload_size="Medium", scale_to_zero=False)
    peer.faults.clear()
    peer.requests.clear()
    return name


@pytest.fixture
def serving(peer):
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.config import Config

    client = WorkspaceClient(config=Config(host=peer.url, token=TOKEN, auth_type="pat",
                                           retry_timeout_seconds=15))
    return DatabricksServing(client, attempts=4, base_delay=0.05, max_delay=0.2,
                             poll_interval=0.02)


def test_state_reads_routes_as_versions(serving, endpoint):
    state = serving.state(endpoint)
    assert state.routes == {"1": 100} and state.model_name == MODEL
    assert state.ready and not state.updating and state.config_updated_at > 0
    assert serving.state("no-such-endpoint") is None


def test_canary_split_puts_both_entities_and_waits_for_the_update(serving, peer, endpoint):
    state = serving.set_traffic(endpoint, MODEL, {"1": 95, "2": 5})
    assert state.routes == {"1": 95, "2": 5} and not state.updating and state.ready
    assert peer.routes(endpoint) == {"1": 95, "2": 5}
    (put,) = peer.calls("PUT", "/config")
    entities = {e["entity_version"]: e for e in put[2]["served_entities"]}
    # The challenger gets the champion's compute settings; names fit Databricks' rules.
    assert entities["2"]["workload_size"] == "Medium"
    assert entities["2"]["scale_to_zero_enabled"] is False
    assert entities["2"]["name"] == served_entity_name(MODEL, "2") == "fraud-2"
    assert entities["1"]["entity_name"] == MODEL
    assert sum(r["traffic_percentage"] for r in put[2]["traffic_config"]["routes"]) == 100
    # It polled through IN_PROGRESS before answering.
    assert len(peer.calls("GET", endpoint)) >= 3


def test_promotion_drops_versions_absent_from_the_routes(serving, peer, endpoint):
    serving.set_traffic(endpoint, MODEL, {"1": 50, "2": 50})
    serving.set_traffic(endpoint, MODEL, {"2": 100, "1": 0})
    assert peer.routes(endpoint) == {"2": 100, "1": 0}
    serving.set_traffic(endpoint, MODEL, {"2": 100})
    served = peer.endpoints[endpoint]["config"]["served_entities"]
    assert [e["entity_version"] for e in served] == ["2"]


def test_same_routes_again_sends_nothing(serving, peer, endpoint):
    serving.set_traffic(endpoint, MODEL, {"1": 75, "2": 25})
    serving.set_traffic(endpoint, MODEL, {"1": 75, "2": 25})
    assert len(peer.calls("PUT", "/config")) == 1


@pytest.mark.parametrize("routes", [{"1": 90, "2": 5}, {"1": 95.5, "2": 4.5}, {"1": 105, "2": -5},
                                    {}])
def test_routes_not_summing_to_100_never_leave_the_client(serving, peer, endpoint, routes):
    with pytest.raises(InvalidRoutes):
        serving.set_traffic(endpoint, MODEL, routes)
    assert peer.calls("PUT") == []
    assert peer.routes(endpoint) == {"1": 100}


def test_the_peer_rejects_malformed_bodies_from_the_real_client(serving, peer, endpoint):
    from databricks.sdk.errors import BadRequest, NotFound
    from databricks.sdk.service.serving import Route, ServedEntityInput, TrafficConfig

    api = serving.client.serving_endpoints
    entities = [ServedEntityInput(name="fraud-1", entity_name=MODEL, entity_version="1"),
                ServedEntityInput(name="fraud-2", entity_name=MODEL, entity_version="2")]
    with pytest.raises(BadRequest, match="sum to 90"):
        api.update_config(endpoint, served_entities=entities, traffic_config=TrafficConfig(
            routes=[Route(served_entity_name="fraud-1", traffic_percentage=85),
                    Route(served_entity_name="fraud-2", traffic_percentage=5)]))
    with pytest.raises(BadRequest, match="unknown served entity"):
        api.update_config(endpoint, served_entities=entities, traffic_config=TrafficConfig(
            routes=[Route(served_entity_name="fraud-1", traffic_percentage=95),
                    Route(served_entity_name="fraud-9", traffic_percentage=5)]))
    with pytest.raises(NotFound):
        api.update_config(endpoint, served_entities=[ServedEntityInput(
            name="fraud-7", entity_name=MODEL, entity_version="7")])
    assert peer.routes(endpoint) == {"1": 100}


def test_409_while_another_update_runs_is_waited_out(serving, peer, endpoint):
    peer.inject("PUT", "/config", 409)
    state = serving.set_traffic(endpoint, MODEL, {"1": 95, "2": 5})
    assert state.routes == {"1": 95, "2": 5}
    assert len(peer.calls("PUT", "/config")) == 2


def test_an_update_in_progress_is_settled_before_putting(serving, peer, endpoint):
    from databricks.sdk.service.serving import Route, ServedEntityInput, TrafficConfig

    serving.client.serving_endpoints.update_config(
        endpoint, served_entities=[ServedEntityInput(name="fraud-1", entity_name=MODEL,
                                                     entity_version="1")],
        traffic_config=TrafficConfig(routes=[Route(served_entity_name="fraud-1",
                                                   traffic_percentage=100)]))
    state = serving.set_traffic(endpoint, MODEL, {"1": 75, "2": 25})
    assert state.routes == {"1": 75, "2": 25}
    assert len(peer.calls("PUT", "/config")) == 2  # no 409: it waited for the first update


@pytest.mark.parametrize("status", [429, 503, 500])
def test_throttling_and_server_errors_are_retried(serving, peer, endpoint, status):
    peer.inject("PUT", "/config", status)
    peer.inject("GET", f"/serving-endpoints/{endpoint}", status)
    state = serving.set_traffic(endpoint, MODEL, {"1": 95, "2": 5})
    assert state.routes == {"1": 95, "2": 5}
    assert len(peer.calls("PUT", "/config")) == 2


def test_retries_are_bounded_and_leave_the_endpoint_whole(serving, peer, endpoint):
    peer.inject("PUT", "/config", 500, times=10)
    with pytest.raises(ServingError, match="InternalError"):
        serving.set_traffic(endpoint, MODEL, {"1": 95, "2": 5})
    assert len(peer.calls("PUT", "/config")) == 4
    assert peer.routes(endpoint) == {"1": 100}


def test_a_failed_update_is_reported_and_the_old_config_keeps_serving(serving, peer, endpoint):
    peer.fail_next_update = True
    with pytest.raises(ServingError, match="UPDATE_FAILED"):
        serving.set_traffic(endpoint, MODEL, {"1": 95, "2": 5})
    assert peer.routes(endpoint) == {"1": 100}


def test_health_from_the_metrics_export_per_served_entity(serving, peer, endpoint):
    serving.set_traffic(endpoint, MODEL, {"1": 95, "2": 5})
    peer.metrics[endpoint] = "\n".join([
        "# HELP request_count_total Number of requests during the last minute",
        "# TYPE request_count_total gauge",
        'request_count_total{served_entity_name="fraud-1"} 950 1700000060000',
        'request_count_total{served_entity_name="fraud-2"} 50 1700000060000',
        'request_4xx_count_total{served_entity_name="fraud-2"} 1 1700000060000',
        'request_5xx_count_total{served_entity_name="fraud-2"} 2 1700000060000',
        'request_5xx_count_total{served_entity_name="fraud-1"} 0 1700000060000',
        'request_count_total{served_entity_name="someone-else-3"} 7 1700000060000',
        "# TYPE request_latency_ms histogram",
        'request_latency_ms_bucket{served_entity_name="fraud-2",le="10"} 30 1700000060000',
        'request_latency_ms_bucket{served_entity_name="fraud-2",le="50"} 48 1700000060000',
        'request_latency_ms_bucket{served_entity_name="fraud-2",le="+Inf"} 50 1700000060000',
        'request_latency_ms_count{served_entity_name="fraud-2"} 50 1700000060000',
        'cpu_usage_percentage{served_entity_name="fraud-2"} 12.5 1700000060000',
        "# EOF"])
    report = serving.health(endpoint, since=0)
    assert not report.cumulative
    assert (report.window_start, report.window_end) == (1700000000.0, 1700000060.0)
    challenger, champion = report.versions["2"], report.versions["1"]
    assert (challenger.requests, challenger.errors) == (50, 3)
    assert challenger.latencies_ms == ((10.0, 30), (50.0, 18), (100.0, 2))
    assert (champion.requests, champion.errors, champion.latencies_ms) == (950, 0, ())
    assert set(report.versions) == {"1", "2"}


def test_no_per_entity_figures_means_no_data_not_zeros():
    report = health_from_metrics("request_count_total 12\n", {"fraud-1": "1"}, "fraud", now=5.0)
    assert report.versions == {} and "no per-entity figures" in report.detail


def test_prometheus_parsing_handles_escapes_and_timestamps():
    (sample,) = parse_prometheus('m{a="x\\"y",b="z"} 3.5 1700000000000\n')
    assert sample == ("m", {"a": 'x"y', "b": "z"}, 3.5, 1700000000.0)
    assert parse_prometheus("# only a comment\nbad line here\n") == []

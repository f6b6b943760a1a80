from tests.helpers import DEV_AUTH, definition, post_run, run_nodes


def test_two_node_run_over_http(client):
    body = {"definition": definition("root>greet", greet={
        "type": "log", "payload": {"message": "Incoming: {{root.result.message}}"}}),
        "payload": {"message": "hello"}}
    response = post_run(client, body)
    assert response.status_code == 200, response.json
    assert response.json["executionState"]["greet"]["result"]["message"] == "Incoming: hello"


def test_engine_entry_point():
    out = run_nodes("root>a", a={"type": "log", "payload": {"message": "{{root.result.n}}"}},
                    payload={"n": 2})
    assert out["executionState"]["a"]["result"]["message"] == "2"
    assert DEV_AUTH

async def test_register_create_list(user_api):
    reply = await user_api.post("/api/tasks", json={"title": "first"})
    assert reply.status == 201
    assert reply.body["task"]["seq"] == 1
    listing = await user_api.get("/api/tasks")
    assert [t["title"] for t in listing.body["tasks"]] == ["first"]

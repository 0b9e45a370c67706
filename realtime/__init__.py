"""TaskMaster Realtime: a real-time task-sync server (REST + Socket.IO on aiohttp)."""

"""The web gallery: members browse, search, star and download their images in a browser, logged in with
Discord OAuth2, under the same visibility rule as /gallery and /job (storage/access.py).

Discord-free and bot-free: it reads the database and the blob store; `bot/app.py` starts it inside
`atelier run` when ATELIER_WEB_ADDR is set (one process, one database).
"""

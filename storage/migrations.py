"""Versioned schema migrations, applied at start-up.

The version lives in `PRAGMA user_version`, which is part of the database header and so moves
inside the same transaction as the DDL: a migration either lands whole or not at all.
"""

from __future__ import annotations

import sqlite3

from storage.errors import SchemaTooNew


def _owner(row: str) -> str:
    """The FTS owner tokens of an image row (`new`, `old` or a table name), as SQL (migration 5 on)."""
    return (f"'g' || {row}.guild_id || ' o' || {row}.guild_id || 'x' || {row}.user_id || CASE"
            f" WHEN {row}.private = 0 THEN ' p' || {row}.guild_id || 'x' || {row}.user_id ELSE '' END")


# Append only. Never edit a migration that has shipped: write the next one.
MIGRATIONS: list[str] = [
    # 1: the whole first schema.
    """
    CREATE TABLE jobs (
        id                INTEGER PRIMARY KEY,
        guild_id          INTEGER,
        channel_id        INTEGER,
        user_id           INTEGER NOT NULL,
        kind              TEXT    NOT NULL,
        parent_job_id     INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
        parent_index      INTEGER,
        request           TEXT    NOT NULL,
        batch_key         TEXT    NOT NULL,
        status            TEXT    NOT NULL DEFAULT 'queued'
                          CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        attempts          INTEGER NOT NULL DEFAULT 0,
        error             TEXT,
        priority          REAL    NOT NULL DEFAULT 1.0,
        private           INTEGER NOT NULL DEFAULT 0,
        lease_owner       TEXT,
        lease_expires_at  REAL,
        created_at        REAL    NOT NULL,
        started_at        REAL,
        finished_at       REAL,
        render_seconds    REAL,
        interaction_token TEXT,
        token_expires_at  REAL,
        message_id        INTEGER,
        delivered_at      REAL
    );
    CREATE INDEX jobs_active ON jobs(status, id) WHERE status IN ('queued', 'running');
    CREATE INDEX jobs_user ON jobs(user_id, id);
    CREATE INDEX jobs_guild_created ON jobs(guild_id, created_at);
    CREATE INDEX jobs_undelivered ON jobs(id)
        WHERE delivered_at IS NULL AND status IN ('done', 'failed', 'cancelled');
    CREATE INDEX jobs_batch_key_done ON jobs(batch_key, id) WHERE status = 'done';

    -- guild_id / user_id / prompt are copied from the job so gallery pages never join.
    CREATE TABLE images (
        id         INTEGER PRIMARY KEY,
        job_id     INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        idx        INTEGER NOT NULL,
        seed       INTEGER NOT NULL,
        blob       TEXT    NOT NULL,
        width      INTEGER NOT NULL,
        height     INTEGER NOT NULL,
        nsfw       INTEGER NOT NULL DEFAULT 0,
        favourite  INTEGER NOT NULL DEFAULT 0,
        deleted    INTEGER NOT NULL DEFAULT 0,
        created_at REAL    NOT NULL,
        guild_id   INTEGER NOT NULL DEFAULT 0,
        user_id    INTEGER NOT NULL,
        prompt     TEXT    NOT NULL DEFAULT '',
        UNIQUE (job_id, idx)
    );
    CREATE INDEX images_gallery ON images(guild_id, user_id, id) WHERE deleted = 0;
    CREATE INDEX images_favourites ON images(guild_id, user_id, id) WHERE deleted = 0 AND favourite = 1;
    CREATE INDEX images_blob ON images(blob);

    -- Contentless: the prompt text lives in `images` already. `owner` holds one token per
    -- guild and one per (guild, user) so a search is an FTS intersection, never a scan of other users' hits.
    -- Prefix indexes make "ligh*" as cheap as a whole word (without them: ~50 ms at 1 M images).
    CREATE VIRTUAL TABLE images_fts USING fts5(
        prompt, owner, content='', tokenize='unicode61', prefix='2 3 4'
    );
    CREATE TRIGGER images_fts_insert AFTER INSERT ON images WHEN new.deleted = 0 BEGIN
        INSERT INTO images_fts(rowid, prompt, owner)
        VALUES (new.id, new.prompt, 'g' || new.guild_id || ' o' || new.guild_id || 'x' || new.user_id);
    END;
    CREATE TRIGGER images_fts_hide AFTER UPDATE OF deleted ON images
        WHEN old.deleted = 0 AND new.deleted = 1 BEGIN
        INSERT INTO images_fts(images_fts, rowid, prompt, owner)
        VALUES ('delete', old.id, old.prompt,
                'g' || old.guild_id || ' o' || old.guild_id || 'x' || old.user_id);
    END;
    CREATE TRIGGER images_fts_unhide AFTER UPDATE OF deleted ON images
        WHEN old.deleted = 1 AND new.deleted = 0 BEGIN
        INSERT INTO images_fts(rowid, prompt, owner)
        VALUES (new.id, new.prompt, 'g' || new.guild_id || ' o' || new.guild_id || 'x' || new.user_id);
    END;
    CREATE TRIGGER images_fts_remove AFTER DELETE ON images WHEN old.deleted = 0 BEGIN
        INSERT INTO images_fts(images_fts, rowid, prompt, owner)
        VALUES ('delete', old.id, old.prompt,
                'g' || old.guild_id || ' o' || old.guild_id || 'x' || old.user_id);
    END;

    CREATE TABLE guild_settings (
        guild_id   INTEGER PRIMARY KEY,
        data       TEXT NOT NULL DEFAULT '{}',
        updated_at REAL NOT NULL
    );
    CREATE TABLE user_settings (
        user_id    INTEGER PRIMARY KEY,
        data       TEXT NOT NULL DEFAULT '{}',
        updated_at REAL NOT NULL
    );
    CREATE TABLE banned_words (
        guild_id   INTEGER NOT NULL,
        word       TEXT    NOT NULL,
        added_by   INTEGER,
        created_at REAL    NOT NULL,
        PRIMARY KEY (guild_id, word)
    );
    CREATE TABLE user_bans (
        guild_id   INTEGER NOT NULL,
        user_id    INTEGER NOT NULL,
        reason     TEXT    NOT NULL DEFAULT '',
        banned_by  INTEGER,
        created_at REAL    NOT NULL,
        expires_at REAL,
        PRIMARY KEY (guild_id, user_id)
    );
    CREATE TABLE audit_log (
        id         INTEGER PRIMARY KEY,
        guild_id   INTEGER,
        actor_id   INTEGER,
        action     TEXT NOT NULL,
        target     TEXT,
        details    TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    );
    CREATE INDEX audit_guild ON audit_log(guild_id, id);
    """,
    # 2: the composed grid of a multi-image job, made by the worker beside the single PNGs so delivery
    # does not decode and re-encode four images on the critical path.
    """
    ALTER TABLE jobs ADD COLUMN grid_blob TEXT;
    """,
    # 3: favourites per member, so anyone can star any image they can see (images.favourite stays the
    # owner's own star, which the owner's gallery index uses). Existing stars carry over.
    """
    CREATE TABLE favourites (
        user_id    INTEGER NOT NULL,
        image_id   INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        created_at REAL    NOT NULL,
        PRIMARY KEY (user_id, image_id)
    ) WITHOUT ROWID;
    CREATE INDEX favourites_image ON favourites(image_id);
    INSERT INTO favourites (user_id, image_id, created_at)
        SELECT user_id, id, created_at FROM images WHERE favourite = 1;
    """,
    # 4: when an image was deleted, so its file is kept for a grace period (undo, moderation review) and
    # then collected; images deleted before this migration start their grace period now. And a member's
    # recent refusals, counted for the refusal cooldown.
    """
    ALTER TABLE images ADD COLUMN deleted_at REAL;
    UPDATE images SET deleted_at = (julianday('now') - 2440587.5) * 86400.0 WHERE deleted = 1;
    CREATE INDEX audit_actor ON audit_log(actor_id, action, created_at);
    """,
    # 5: galleries at scale without a join. A sheet of another member's images needs the job's privacy:
    # it is copied onto the image (jobs.complete writes it, a guard refuses a mismatch, a trigger follows
    # later changes of jobs.private) and covered by a partial index for the public view. The search
    # index gains a token per owner's *public* images, so counting another member's matches never
    # reads the table (a common word of a 70 k-image member: 12 ms instead of 90). A per-owner counter
    # table kept by triggers makes "page 3 of N" O(1) instead of a count over up to 100 k entries.
    # Each star carries a copy of its image's guild, owner, privacy and deletion, so a member's
    # favourites page and count read one index, never an image row per star.
    f"""
    DROP TRIGGER images_fts_insert;
    DROP TRIGGER images_fts_hide;
    DROP TRIGGER images_fts_unhide;
    DROP TRIGGER images_fts_remove;
    ALTER TABLE images ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
    UPDATE images SET private = 1 WHERE job_id IN (SELECT id FROM jobs WHERE private != 0);
    CREATE INDEX images_public ON images(guild_id, user_id, id) WHERE deleted = 0 AND private = 0;

    CREATE TRIGGER images_private_guard BEFORE INSERT ON images
        WHEN new.private != coalesce((SELECT private != 0 FROM jobs WHERE id = new.job_id), 0) BEGIN
        SELECT RAISE(ABORT, 'images.private must be its job''s private');
    END;
    CREATE TRIGGER jobs_private_to_images AFTER UPDATE OF private ON jobs
        WHEN (old.private != 0) != (new.private != 0) BEGIN
        UPDATE images SET private = (new.private != 0) WHERE job_id = new.id;
    END;

    -- Owner tokens: g<guild>, o<guild>x<user>, and p<guild>x<user> while the image is public.
    INSERT INTO images_fts(images_fts) VALUES ('delete-all');
    INSERT INTO images_fts(rowid, prompt, owner) SELECT id, prompt, {_owner("images")} FROM images
        WHERE deleted = 0;
    CREATE TRIGGER images_fts_insert AFTER INSERT ON images WHEN new.deleted = 0 BEGIN
        INSERT INTO images_fts(rowid, prompt, owner) VALUES (new.id, new.prompt, {_owner("new")});
    END;
    CREATE TRIGGER images_fts_hide AFTER UPDATE OF deleted ON images
        WHEN old.deleted = 0 AND new.deleted = 1 BEGIN
        INSERT INTO images_fts(images_fts, rowid, prompt, owner)
            VALUES ('delete', old.id, old.prompt, {_owner("old")});
    END;
    CREATE TRIGGER images_fts_unhide AFTER UPDATE OF deleted ON images
        WHEN old.deleted = 1 AND new.deleted = 0 BEGIN
        INSERT INTO images_fts(rowid, prompt, owner) VALUES (new.id, new.prompt, {_owner("new")});
    END;
    CREATE TRIGGER images_fts_privacy AFTER UPDATE OF private ON images
        WHEN old.deleted = 0 AND new.deleted = 0 AND old.private != new.private BEGIN
        INSERT INTO images_fts(images_fts, rowid, prompt, owner)
            VALUES ('delete', old.id, old.prompt, {_owner("old")});
        INSERT INTO images_fts(rowid, prompt, owner) VALUES (new.id, new.prompt, {_owner("new")});
    END;
    CREATE TRIGGER images_fts_remove AFTER DELETE ON images WHEN old.deleted = 0 BEGIN
        INSERT INTO images_fts(images_fts, rowid, prompt, owner)
            VALUES ('delete', old.id, old.prompt, {_owner("old")});
    END;

    ALTER TABLE favourites ADD COLUMN guild_id INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE favourites ADD COLUMN owner_id INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE favourites ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE favourites ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    UPDATE favourites SET (guild_id, owner_id, private, deleted) =
        (SELECT guild_id, user_id, private, deleted FROM images WHERE images.id = favourites.image_id);
    CREATE INDEX favourites_shown ON favourites(user_id, guild_id, image_id, owner_id, private)
        WHERE deleted = 0;
    CREATE TRIGGER favourites_copy AFTER INSERT ON favourites BEGIN
        UPDATE favourites SET (guild_id, owner_id, private, deleted) =
            (SELECT guild_id, user_id, private, deleted FROM images WHERE images.id = new.image_id)
            WHERE user_id = new.user_id AND image_id = new.image_id;
    END;
    CREATE TRIGGER images_to_favourites AFTER UPDATE OF deleted, private ON images
        WHEN old.deleted != new.deleted OR old.private != new.private BEGIN
        UPDATE favourites SET private = new.private, deleted = new.deleted WHERE image_id = new.id;
    END;

    -- visible: the owner's own sheet (not deleted); public: what other members see (also not private).
    CREATE TABLE gallery_counts (
        guild_id INTEGER NOT NULL,
        user_id  INTEGER NOT NULL,
        visible  INTEGER NOT NULL DEFAULT 0,
        public   INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (guild_id, user_id)
    ) WITHOUT ROWID;
    INSERT INTO gallery_counts (guild_id, user_id, visible, public)
        SELECT guild_id, user_id, sum(deleted = 0), sum(deleted = 0 AND private = 0)
        FROM images GROUP BY guild_id, user_id;
    CREATE TRIGGER images_counts_insert AFTER INSERT ON images BEGIN
        INSERT INTO gallery_counts (guild_id, user_id, visible, public)
            VALUES (new.guild_id, new.user_id, new.deleted = 0, new.deleted = 0 AND new.private = 0)
            ON CONFLICT (guild_id, user_id) DO UPDATE
            SET visible = visible + excluded.visible, public = public + excluded.public;
    END;
    CREATE TRIGGER images_counts_update AFTER UPDATE OF deleted, private ON images
        WHEN old.deleted != new.deleted OR old.private != new.private BEGIN
        UPDATE gallery_counts
            SET visible = visible - (old.deleted = 0) + (new.deleted = 0),
                public = public - (old.deleted = 0 AND old.private = 0)
                         + (new.deleted = 0 AND new.private = 0)
            WHERE guild_id = new.guild_id AND user_id = new.user_id;
    END;
    CREATE TRIGGER images_counts_delete AFTER DELETE ON images BEGIN
        UPDATE gallery_counts
            SET visible = visible - (old.deleted = 0), public = public - (old.deleted = 0 AND old.private = 0)
            WHERE guild_id = old.guild_id AND user_id = old.user_id;
    END;
    """,
    # 6: the scheduler's guild pauses get a table of their own (they were the key `queue_paused` in the
    # guild settings, which the bot owns); paused guilds stay paused.
    """
    CREATE TABLE paused_queues (
        guild_id  INTEGER PRIMARY KEY,
        paused_at REAL    NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO paused_queues (guild_id, paused_at)
        SELECT guild_id, updated_at FROM guild_settings WHERE json_extract(data, '$.queue_paused') = 1;
    UPDATE guild_settings SET data = json_remove(data, '$.queue_paused')
        WHERE json_extract(data, '$.queue_paused') IS NOT NULL;
    """,
    # 7: a prompt that expands into many jobs waits here for its author's confirmation (the Confirm
    # button names the row, so a restart in between loses nothing); `settled_at` makes a second click
    # harmless. And an index for walking a job's children (/lineage).
    """
    CREATE TABLE pending_batches (
        id         INTEGER PRIMARY KEY,
        user_id    INTEGER NOT NULL,
        guild_id   INTEGER,
        channel_id INTEGER,
        requests   TEXT    NOT NULL,
        created_at REAL    NOT NULL,
        settled_at REAL,
        outcome    TEXT CHECK (outcome IN ('confirmed', 'cancelled'))
    );
    -- /lineage walks a job's children.
    CREATE INDEX jobs_parent ON jobs(parent_job_id) WHERE parent_job_id IS NOT NULL;
    """,
    # 8: /describe's prompt suggestions, so its Imagine buttons work after a restart.
    """
    CREATE TABLE descriptions (
        id         INTEGER PRIMARY KEY,
        guild_id   INTEGER,
        channel_id INTEGER,
        user_id    INTEGER NOT NULL,
        prompts    TEXT    NOT NULL,
        created_at REAL    NOT NULL
    );
    """,
    # 9: server styles (/style): a name per guild for a prompt suffix, an optional LoRA, and up to five
    # sample images as blob keys (a JSON list; their files are kept while the style exists).
    """
    CREATE TABLE styles (
        id            INTEGER PRIMARY KEY,
        guild_id      INTEGER NOT NULL,
        name          TEXT    NOT NULL,
        user_id       INTEGER NOT NULL,
        suffix        TEXT    NOT NULL DEFAULT '',
        lora          TEXT,
        lora_weight   REAL    NOT NULL DEFAULT 1.0,
        images        TEXT    NOT NULL DEFAULT '[]',
        source_job_id INTEGER,
        created_at    REAL    NOT NULL,
        UNIQUE (guild_id, name)
    );
    """,
    # 10: personal styles (`--p`): each version a member's starred jobs gave, kept so `--p v2` means the
    # same later; and when they last reset it (only stars after that count).
    """
    CREATE TABLE personal_styles (
        user_id     INTEGER NOT NULL,
        version     INTEGER NOT NULL,
        suffix      TEXT    NOT NULL,
        lora        TEXT,
        lora_weight REAL    NOT NULL DEFAULT 1.0,
        liked_jobs  INTEGER NOT NULL,
        created_at  REAL    NOT NULL,
        PRIMARY KEY (user_id, version)
    ) WITHOUT ROWID;
    CREATE TABLE personal_style_resets (
        user_id  INTEGER PRIMARY KEY,
        reset_at REAL    NOT NULL
    ) WITHOUT ROWID;
    """,
    # 11: the starred images of each personal style version (JSON list of `job.image` names, newest star
    # first), used as its style reference on models with an IP-Adapter; old versions keep their set.
    """
    ALTER TABLE personal_styles ADD COLUMN images TEXT NOT NULL DEFAULT '[]';
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring `conn` (autocommit mode) to SCHEMA_VERSION; returns the number of migrations applied."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database schema version {current} is newer than this code ({SCHEMA_VERSION}); "
            "upgrade Atelier or restore a backup"
        )
    applied = 0
    for version in range(current + 1, SCHEMA_VERSION + 1):
        # executescript commits anything pending first, so the transaction is part of the script.
        # If a statement fails the script stops inside the open transaction: roll it back.
        script = f"BEGIN IMMEDIATE;\n{MIGRATIONS[version - 1]}\nPRAGMA user_version = {version};\nCOMMIT;"
        try:
            conn.executescript(script)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied += 1
    return applied

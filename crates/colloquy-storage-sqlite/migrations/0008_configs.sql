-- Prompts, tools and configs of the EVI platform API (colloquy_storage::ResourceStore).
-- (0007 belongs to another change; sqlx applies migrations by version, gaps allowed.)

-- A resource: one row per prompt, tool or config, shared by its versions.
CREATE TABLE evi_resources (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    kind          TEXT NOT NULL,       -- 'prompt', 'tool' or 'config'
    name          TEXT NOT NULL,
    created_on    INTEGER NOT NULL,    -- creation of the first version, epoch ms
    last_version  INTEGER NOT NULL     -- highest version number ever issued
);
CREATE INDEX evi_resources_by_user ON evi_resources (user_id, kind, created_on, id);
CREATE INDEX evi_resources_by_name ON evi_resources (user_id, kind, name, created_on, id);

-- Its versions; `body` holds the kind's fields as JSON text.
CREATE TABLE evi_resource_versions (
    resource_id          TEXT NOT NULL REFERENCES evi_resources(id) ON DELETE CASCADE,
    version              INTEGER NOT NULL,
    version_description  TEXT,
    modified_on          INTEGER NOT NULL,
    body                 TEXT NOT NULL,
    PRIMARY KEY (resource_id, version)
);

-- What a config version references: a prompt or tool, at a fixed version or (NULL) the
-- latest. Deleting what is referenced is refused by the store; the foreign key on the
-- target is the last line of defence.
CREATE TABLE evi_config_references (
    config_id       TEXT NOT NULL,
    config_version  INTEGER NOT NULL,
    target_id       TEXT NOT NULL REFERENCES evi_resources(id),
    target_version  INTEGER,
    FOREIGN KEY (config_id, config_version)
        REFERENCES evi_resource_versions(resource_id, version) ON DELETE CASCADE
);
CREATE INDEX evi_config_references_by_target ON evi_config_references (target_id, target_version);
CREATE INDEX evi_config_references_by_config ON evi_config_references (config_id, config_version);

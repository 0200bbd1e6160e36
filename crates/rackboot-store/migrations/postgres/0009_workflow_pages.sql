-- Workflow pages are newest first (created_at DESC, id DESC): without this
-- index every page, the dashboard's included, sorted the whole table.
CREATE INDEX workflows_created ON workflows (created_at, id);

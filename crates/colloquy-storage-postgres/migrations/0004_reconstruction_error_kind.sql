-- Why a reconstruction failed, for programs (`error` says it for people): `no_audio`,
-- `undecodable` or `attempts_exhausted`. NULL on success and on failures recorded before
-- this column, which the web UI still tells apart by their text.
ALTER TABLE audio_reconstructions ADD COLUMN error_kind TEXT;

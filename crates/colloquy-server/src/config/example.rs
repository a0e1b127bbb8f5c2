//! The annotated example printed by `colloquy config example`.

/// A commented example configuration with every setting at its default.
pub const EXAMPLE_TOML: &str = r#"# Colloquy configuration. Every setting is optional; shown values are the defaults.
# Precedence: defaults < this file (--config / COLLOQUY_CONFIG) < COLLOQUY_* environment
# variables (nested keys joined with "__", e.g. COLLOQUY_CHAT__MAX_DURATION_SECS=600)
# < command-line flags.

# Address to listen on. Port 0 picks a free port (the real address is printed).
listen = "127.0.0.1:8080"                # COLLOQUY_LISTEN, --listen

# Folder for the SQLite database, the instance lock and local audio files.
data_dir = "./colloquy-data"             # COLLOQUY_DATA_DIR, --data-dir

# Database. Default: SQLite at <data_dir>/colloquy.db. A postgres:// URL selects PostgreSQL.
# database_url = "postgres://colloquy:secret@127.0.0.1:5432/colloquy"   # COLLOQUY_DATABASE_URL

# Base URL printed at start-up and used for links; default http://<listen>.
# public_url = "https://colloquy.example.com"

[chat]
# End a chat as INACTIVITY_TIMEOUT after this many seconds without a client message.
# A chat connected with a config_id uses its config's timeouts instead.
inactivity_timeout_secs = 120
# End a chat as MAX_DURATION_TIMEOUT after this many seconds (also the limit of a chat whose
# config disables its maximum duration).
max_duration_secs = 1800
# Largest accepted socket message in bytes; larger ones are refused with an `error` message
# and the session goes on (messages over 4x this size close the socket with code 1009).
max_message_bytes = 16777216
# A send to the client that makes no progress for this many seconds (the client stopped
# reading) ends the chat as ERROR with reason client_not_reading.
send_timeout_secs = 10
# After a config's on_inactivity_timeout message is said, seconds the user has to answer
# before the chat ends as INACTIVITY_TIMEOUT.
inactivity_grace_secs = 15

[limits]
# Failed authentication attempts (wrong API key, secret or token) one client address may
# make per minute; over that, its failing attempts get 429 with Retry-After instead of 401
# until the window has room again. Correct credentials keep working from every address.
# Counted per server process, IPv6 per /64. 0: off.
auth_failures_per_minute = 60
# Seconds a client has to send a request's headers, on a new connection or between two
# requests of a kept-alive one; then the connection is closed (chat sockets are not affected).
header_read_timeout_secs = 10
# Most chats one account may have open at once over every server sharing the database
# (0: no limit). A connect over the limit is refused with socket error E0203.
max_concurrent_chats_per_account = 0
# Most client messages per second one account may send over all its chats on one server
# (0: no limit). Messages over the limit get socket error E0105 and are dropped.
max_messages_per_second_per_account = 0

[database]
# SQLite durability: "full" fsyncs every group commit; "normal" survives process crashes only.
sqlite_synchronous = "full"
# Size of the PostgreSQL connection pool.
postgres_max_connections = 16
# Most socket operations group-committed in one transaction.
max_batch = 512

[storage]
# Audio objects (captured segments, reconstructed MP4s). Default: <data_dir>/objects.
# Setting a bucket selects an S3-compatible store:
# bucket = "colloquy-audio"
# endpoint = "http://127.0.0.1:9000"     # omit for AWS S3
# region = "us-east-1"
# access_key_id = "..."
# secret_access_key = "..."
# Secret for signing local download URLs. Default: generated once into <data_dir>/signing.key.
# Servers that share a database must share this secret.
# signing_secret = "..."

[audio]
# Reconstruction workers inside `colloquy serve` (0 leaves the work to `colloquy worker`).
workers = 1
# Stereo output with the user on the left and the assistant on the right (default: mono mix).
stereo_split = false
# A worker's claim on a job lasts this long unless renewed; a crashed worker's job is retried.
job_lease_secs = 30
# Attempts before a job whose worker keeps dying ends as ERROR.
job_max_attempts = 3

[log]
# "text" or "json".
format = "text"
# tracing filter, e.g. "info" or "colloquy_server=debug,info". RUST_LOG overrides it.
filter = "info"

[engine]
# What answers in a chat (see docs/engines.md):
#   "client": the client drives the chat itself (user_input, assistant_input, ...).
#   "relay":  every chat is relayed to the upstream EVI socket of [engine.relay] and
#             recorded both ways.
mode = "client"                          # COLLOQUY_ENGINE__MODE

[engine.relay]
# Upstream EVI-compatible chat socket, e.g. the hosted EVI API:
# url = "wss://api.hume.ai/v0/evi/chat"  # COLLOQUY_ENGINE__RELAY__URL
# Upstream credentials: an API key (sent as X-Hume-Api-Key) or an access token.
# api_key = "..."                        # COLLOQUY_ENGINE__RELAY__API_KEY
# access_token = "..."
# Seconds to connect and receive the upstream's chat_metadata.
connect_timeout_secs = 10
# Seconds the upstream may stay silent, not even answering a ping, before the chat ends as ERROR.
idle_timeout_secs = 30

[engine.client]
# Speak assistant_input in client-driven chats (audio_output chunks, recorded as the
# assistant's voice) with the voice of [engine.pipeline]: its TTS service, else the
# built-in espeak-ng voice (needs the libespeak-ng1 and espeak-ng-data packages; without
# them, or with speak = false, assistant_input is answered with text only).
speak = true                             # COLLOQUY_ENGINE__CLIENT__SPEAK

[engine.pipeline]
# Used by mode "pipeline": Colloquy answers through OpenAI-compatible services.
# Voice name sent to the TTS service.
tts_voice = "alloy"
# System prompt when the client sends none.
# system_prompt = "You are a helpful voice assistant. Answer briefly."
# Events of a resumed chat group given to the model as history.
event_limit = 300
# Turn detection on the user's audio: silence that ends a turn, the voiced time before
# speech counts (and interrupts the assistant), and the voice-activity threshold (0-1).
vad_silence_ms = 600
vad_min_speech_ms = 160
vad_threshold = 0.5
# The language model (required for mode "pipeline"): streamed /chat/completions.
# [engine.pipeline.llm]
# base_url = "http://127.0.0.1:11434/v1"   # COLLOQUY_ENGINE__PIPELINE__LLM__BASE_URL
# model = "llama3.2"
# api_key = "..."
# timeout_secs = 30
# Speech to text (/audio/transcriptions) and text to speech (/audio/speech), same fields:
# [engine.pipeline.asr]
# [engine.pipeline.tts]

[engine.expression]
# Emotion scores of the user's speech in pipeline chats, from a service speaking Hume's
# streaming expression-measurement protocol. Without url: no scores (never invented).
# url = "wss://api.hume.ai/v0/stream/models"   # COLLOQUY_ENGINE__EXPRESSION__URL
# api_key = "..."                              # sent as X-Hume-Api-Key
# Seconds to open the socket, and to measure one utterance (then it has no scores).
connect_timeout_secs = 5
timeout_secs = 5

[webhooks]
# Chat webhooks (chat_started, chat_ended, tool_call), signed as Hume signs them, delivered
# from a durable outbox by every `colloquy serve` and `colloquy worker` sharing the database.
# Refuse targets on loopback and private networks (for multi-tenant servers).
deny_private_targets = false             # COLLOQUY_WEBHOOKS__DENY_PRIVATE_TARGETS
# Seconds one attempt may take; a timeout, a connection error or a non-2xx answer is retried
# 2 s later, then 6 s, 18 s, 54 s, ... (x3 each time, at most 2 h apart) until
# retry_for_secs after the delivery was written; then it is marked failed.
timeout_secs = 10
retry_for_secs = 86400
# Deliveries one process has in flight at once.
max_in_flight = 64
# Milliseconds between looks at the outbox when nothing wakes the worker.
poll_interval_ms = 1000
# Server-wide subscriptions: every chat of every account, signed with their own key.
# (TOML cannot hold both a [webhooks] table and [[webhooks]] entries, so they live here.)
# [[webhooks.subscriptions]]
# url = "https://hooks.example.com/colloquy"
# events = ["chat_started", "chat_ended", "tool_call"]
# signing_key = "..."

# Per-key overrides, by API key prefix as shown by `colloquy keys list`:
# [engine.keys."AbCd1234"]
# mode = "relay"

[tts]
# Text to speech (/v0/tts): how long a generation can be continued (context) or saved as
# a voice, seconds.
generation_ttl_secs = 86400              # COLLOQUY_TTS__GENERATION_TTL_SECS
# Voices of the [engine.pipeline.tts] service listed in the voice library (the OpenAI
# speech API cannot list them). Listed only when that service is configured.
service_voices = ["alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer"]
# Operator voices, added to the library (same name as a built-in voice: replaces it).
# engine: "builtin" (espeak-ng voice, e.g. "en-gb+m3") or "service" (a service voice name).
# [[tts.voices]]
# name = "Narrator"
# engine = "builtin"
# engine_voice = "en-gb+m3"
# speed = 1.0                            # multiplier
# pitch = 40                             # 0-100, built-in voice only
# description = "A calm British narrator"
"#;

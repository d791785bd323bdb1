-- Undo 0001.initial: drop every table it created (their indexes and
-- constraints go with them), children before parents.

DROP TABLE IF EXISTS user_sessions;
DROP TABLE IF EXISTS otp_verifications;
DROP TABLE IF EXISTS file_uploads;
DROP TABLE IF EXISTS messages;
DROP TABLE IF EXISTS chats;
DROP TABLE IF EXISTS users;

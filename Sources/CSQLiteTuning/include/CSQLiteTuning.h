#ifndef CSQLITE_TUNING_H
#define CSQLITE_TUNING_H

/// Turns off SQLite's memory-usage statistics, which put one process-wide mutex around
/// every allocation SQLite makes. Must run before the first connection opens; returns
/// SQLITE_OK (0), or SQLITE_MISUSE once SQLite is initialised.
int lm_sqlite_disable_memory_statistics(void);

#endif

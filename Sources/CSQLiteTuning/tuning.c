#include <sqlite3.h>
#include "CSQLiteTuning.h"

// sqlite3_config is variadic, so Swift cannot call it; this wrapper is the only C here.
int lm_sqlite_disable_memory_statistics(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

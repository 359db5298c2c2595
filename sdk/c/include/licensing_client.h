/*
 * licensing_client: a C client of the License Manager gateway for products.
 *
 * Validate (every answer signed by the server and verified against the public keys the
 * product pins), activate and deactivate machines, hold floating seats (a background
 * thread heartbeats them), report usage in batches, verify offline license files, and
 * honour the last verified answer for a configured time when the gateway cannot be
 * reached. Errors are codes with messages; nothing aborts. No global state: everything
 * lives in a handle, and a handle may be shared between threads (calls are serialized on
 * its connection).
 */
#ifndef LICENSING_CLIENT_H
#define LICENSING_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Codes: the server's status codes (gRPC's numbering), and LC_UNVERIFIED for an answer
 * that failed its checks (forged, altered, replayed, signed by a key not pinned). */
enum lc_code {
    LC_OK = 0,
    LC_INVALID_ARGUMENT = 3,
    LC_DEADLINE_EXCEEDED = 4,
    LC_NOT_FOUND = 5,
    LC_ALREADY_EXISTS = 6,
    LC_PERMISSION_DENIED = 7,
    LC_RESOURCE_EXHAUSTED = 8,
    LC_FAILED_PRECONDITION = 9,
    LC_INTERNAL = 13,
    LC_UNAVAILABLE = 14,
    LC_UNAUTHENTICATED = 16,
    LC_UNVERIFIED = 100,
    LC_NO_MEMORY = 101
};

typedef struct {
    int code;
    char message[512];
} lc_error;

/* Reasons a validation gives (licensing.v1.ReasonCode). */
enum lc_reason {
    LC_REASON_VALID = 1,
    LC_REASON_IN_GRACE = 2,
    LC_REASON_EXPIRED = 3,
    LC_REASON_SUSPENDED = 4,
    LC_REASON_REVOKED = 5,
    LC_REASON_NOT_FOUND = 6,
    LC_REASON_NOT_ACTIVATED = 7,
    LC_REASON_MACHINE_LIMIT = 8,
    LC_REASON_SEAT_LIMIT = 10,
    LC_REASON_FEATURE_NOT_ENTITLED = 11
};

typedef struct {
    /* "unix:/path/gateway.sock" or "host:port" (TLS). */
    const char *endpoint;
    const char *api_key;
    /* PEM file of the CA the gateway's certificate must chain to (TCP only; required there). */
    const char *ca_file;
    /* Per-call deadline; 0 = 10 s. */
    int timeout_ms;
    /* How long the last verified answer is honoured while the gateway cannot be reached. */
    int64_t offline_grace_seconds;
    /* How far the server's clock may be from ours; 0 = 300 s. */
    int64_t max_clock_skew_seconds;
    /* Unix seconds; NULL = the system clock (tests inject one). */
    int64_t (*clock)(void *context);
    void *clock_context;
} lc_config;

typedef struct lc_client lc_client;
typedef struct lc_seat lc_seat;

typedef struct {
    int reason;                 /* enum lc_reason */
    int valid;                  /* 1 for VALID or IN_GRACE */
    char license_id[64];
    int64_t expires_at;         /* 0 = perpetual */
    int64_t grace_ends_at;
    int64_t server_time;
    int64_t offline_since;      /* 0 = answered now; else when the honoured answer was verified */
    size_t feature_count;
    char **features;            /* freed by lc_validation_clear */
} lc_validation;

int lc_client_new(const lc_config *config, lc_client **out, lc_error *error);
/* Pins a public key (raw Ed25519, 32 bytes) by its kid; answers must be signed by a pinned key. */
int lc_client_pin_key(lc_client *client, const char *kid, const unsigned char public_key[32], lc_error *error);
void lc_client_free(lc_client *client);

/* Validates with a fresh nonce and verifies the signed answer. */
int lc_validate(lc_client *client, const char *license_key, const char *fingerprint, const char *feature, lc_validation *out, lc_error *error);
void lc_validation_clear(lc_validation *validation);

/* `reason` (may be NULL) gets the activation's reason code. */
int lc_activate(lc_client *client, const char *license_key, const char *fingerprint, const char *machine_name, int *reason, lc_error *error);
int lc_deactivate(lc_client *client, const char *license_key, const char *fingerprint, int *deactivated, lc_error *error);

/* A floating seat, heartbeaten by a background thread until lc_seat_checkin (which frees it). */
int lc_seat_checkout(lc_client *client, const char *license_key, const char *client_id, int64_t ttl_seconds, lc_seat **out, lc_error *error);
/* 1 while the last heartbeat kept the seat. */
int lc_seat_held(lc_seat *seat);
int lc_seat_checkin(lc_seat *seat, lc_error *error);

/* Usage: buffered in the handle (each event with its own id), sent by lc_usage_flush. */
int lc_usage_record(lc_client *client, const char *license_key, const char *feature, uint64_t quantity, lc_error *error);
int lc_usage_flush(lc_client *client, uint32_t *accepted, lc_error *error);

/* Verifies an offline license file (armoured LICENSE CERTIFICATE) against the pinned keys,
 * this machine's fingerprint and the clock: a clock set back before `last_seen` is refused.
 * On success `new_last_seen` gets the value to store for the next check. */
int lc_verify_offline_file(lc_client *client, const char *file, const char *fingerprint, int64_t last_seen, int64_t *new_last_seen, lc_error *error);

/* Any method, for what the functions above do not cover: `request` is the encoded
 * request; `*response` (freed with free()) the encoded answer. */
int lc_call(lc_client *client, const char *method, const uint8_t *request, size_t request_length, uint8_t **response, size_t *response_length, lc_error *error);

#ifdef __cplusplus
}
#endif
#endif

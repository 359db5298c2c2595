/*
 * licensing_client: the gateway's wire protocol (4-byte big-endian length, then an
 * encoded licensing.v1.Envelope) over a Unix socket or TLS, with the messages protoc-c
 * generated from the project's proto/ (Sources/CLicensingProto, shared with the server).
 */
#define _GNU_SOURCE
#include "licensing_client.h"

#include <CLicensingProto.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <signal.h>

#define MAX_FRAME (4u << 20)
#define MAX_KEYS 32

struct pinned_key {
    char kid[96];
    unsigned char key[32];
};

/* The last verified valid answer for a key, machine and feature. */
struct grace_entry {
    char *id;
    lc_validation answer;
    int64_t verified_at;
    struct grace_entry *next;
};

struct usage_event {
    char id[40];
    char *license_key;
    char *feature;
    uint64_t quantity;
    int64_t at;
};

struct lc_client {
    char *endpoint;
    char *api_key;
    char *ca_file;
    int timeout_ms;
    int64_t offline_grace_seconds;
    int64_t max_clock_skew_seconds;
    int64_t (*clock)(void *);
    void *clock_context;
    /* Guards everything below: one call at a time on the connection. */
    pthread_mutex_t lock;
    int fd;
    SSL_CTX *ssl_context;
    SSL *ssl;
    uint64_t next_call;
    struct pinned_key keys[MAX_KEYS];
    size_t key_count;
    struct grace_entry *grace;
    struct usage_event *usage;
    size_t usage_count;
    size_t usage_capacity;
};

struct lc_seat {
    lc_client *client;
    char *license_key;
    char *lease_id;
    int64_t interval_ms;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stopping;
    int held;
};

static int fail(lc_error *error, int code, const char *format, ...) {
    if (error) {
        error->code = code;
        va_list arguments;
        va_start(arguments, format);
        vsnprintf(error->message, sizeof error->message, format, arguments);
        va_end(arguments);
    }
    return code;
}

static int ok(lc_error *error) {
    if (error) {
        error->code = LC_OK;
        error->message[0] = 0;
    }
    return LC_OK;
}

static int64_t now_seconds(lc_client *client) {
    if (client->clock) return client->clock(client->clock_context);
    return (int64_t)time(NULL);
}

static int64_t monotonic_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *copy(const char *text) {
    return text ? strdup(text) : NULL;
}

/* ---- connection ----------------------------------------------------------------- */

static void disconnect(lc_client *client) {
    if (client->ssl) {
        SSL_free(client->ssl);
        client->ssl = NULL;
    }
    if (client->fd >= 0) {
        close(client->fd);
        client->fd = -1;
    }
}

static int set_timeouts(int fd, int64_t remaining_ms) {
    if (remaining_ms < 1) remaining_ms = 1;
    struct timeval tv = {.tv_sec = remaining_ms / 1000, .tv_usec = (remaining_ms % 1000) * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) return -1;
    return setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int connect_tcp(lc_client *client, const char *host, const char *port, int64_t deadline, lc_error *error) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *found = NULL;
    int status = getaddrinfo(host, port, &hints, &found);
    if (status != 0) return fail(error, LC_UNAVAILABLE, "cannot resolve %s: %s", host, gai_strerror(status));
    int fd = -1;
    for (struct addrinfo *address = found; address; address = address->ai_next) {
        fd = socket(address->ai_family, address->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, address->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, address->ai_addr, address->ai_addrlen) == 0 || errno == EINPROGRESS) {
            struct pollfd poller = {.fd = fd, .events = POLLOUT};
            int64_t wait = deadline - monotonic_ms();
            int soerror = 0;
            socklen_t length = sizeof soerror;
            if (wait > 0 && poll(&poller, 1, (int)wait) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerror, &length) == 0 && soerror == 0) break;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(found);
    if (fd < 0) return fail(error, LC_UNAVAILABLE, "cannot connect to %s:%s", host, port);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    client->fd = fd;
    return LC_OK;
}

static int connect_gateway(lc_client *client, int64_t deadline, lc_error *error) {
    if (client->fd >= 0) return LC_OK;
    if (strncmp(client->endpoint, "unix:", 5) == 0) {
        struct sockaddr_un address = {.sun_family = AF_UNIX};
        const char *path = client->endpoint + 5;
        if (strlen(path) >= sizeof address.sun_path) return fail(error, LC_INVALID_ARGUMENT, "the socket path is too long");
        strcpy(address.sun_path, path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return fail(error, LC_UNAVAILABLE, "socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
            int saved = errno;
            close(fd);
            return fail(error, LC_UNAVAILABLE, "the gateway cannot be reached at %s: %s", client->endpoint, strerror(saved));
        }
        client->fd = fd;
        return LC_OK;
    }
    char host[256], port[16];
    const char *colon = strrchr(client->endpoint, ':');
    if (!colon || colon == client->endpoint || (size_t)(colon - client->endpoint) >= sizeof host || strlen(colon + 1) >= sizeof port)
        return fail(error, LC_INVALID_ARGUMENT, "the endpoint must be unix:/path or host:port");
    memcpy(host, client->endpoint, (size_t)(colon - client->endpoint));
    host[colon - client->endpoint] = 0;
    strcpy(port, colon + 1);
    int status = connect_tcp(client, host, port, deadline, error);
    if (status != LC_OK) return status;
    set_timeouts(client->fd, deadline - monotonic_ms());
    client->ssl = SSL_new(client->ssl_context);
    if (!client->ssl) {
        disconnect(client);
        return fail(error, LC_NO_MEMORY, "SSL_new failed");
    }
    SSL_set_fd(client->ssl, client->fd);
    unsigned char ip[16];
    X509_VERIFY_PARAM *param = SSL_get0_param(client->ssl);
    if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1) {
        X509_VERIFY_PARAM_set1_ip_asc(param, host);
    } else {
        SSL_set_tlsext_host_name(client->ssl, host);
        X509_VERIFY_PARAM_set1_host(param, host, 0);
    }
    if (SSL_connect(client->ssl) != 1) {
        unsigned long code = ERR_get_error();
        char reason[256];
        ERR_error_string_n(code, reason, sizeof reason);
        long verify = SSL_get_verify_result(client->ssl);
        disconnect(client);
        ERR_clear_error();
        return fail(error, LC_UNAVAILABLE, "TLS with the gateway failed: %s%s%s", reason, verify != X509_V_OK ? "; certificate: " : "",
                    verify != X509_V_OK ? X509_verify_cert_error_string(verify) : "");
    }
    return LC_OK;
}

/* Writes everything. A peer that closed must not kill the product with SIGPIPE: plain
 * sockets use MSG_NOSIGNAL; for TLS (OpenSSL writes with write()) the signal is blocked in
 * this thread for the write, and one it raised is consumed before unblocking. */
static int write_all(lc_client *client, const uint8_t *data, size_t length) {
    sigset_t pipe_only, previous;
    if (client->ssl) {
        sigemptyset(&pipe_only);
        sigaddset(&pipe_only, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_only, &previous);
    }
    int status = 0;
    while (length > 0) {
        ssize_t written = client->ssl ? SSL_write(client->ssl, data, (int)length) : send(client->fd, data, length, MSG_NOSIGNAL);
        if (written <= 0) {
            status = -1;
            break;
        }
        data += written;
        length -= (size_t)written;
    }
    if (client->ssl) {
        struct timespec zero = {0, 0};
        sigset_t pending;
        sigpending(&pending);
        if (sigismember(&pending, SIGPIPE) && !sigismember(&previous, SIGPIPE)) sigtimedwait(&pipe_only, NULL, &zero);
        pthread_sigmask(SIG_SETMASK, &previous, NULL);
    }
    return status;
}

/* 0, or -1 (closed, error) / -2 (timed out). */
static int read_exactly(lc_client *client, uint8_t *data, size_t length) {
    while (length > 0) {
        ssize_t got = client->ssl ? SSL_read(client->ssl, data, (int)length) : recv(client->fd, data, length, 0);
        if (got <= 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? -2 : -1;
        data += got;
        length -= (size_t)got;
    }
    return 0;
}

/* One unary call with the lock held. */
static int call_locked(lc_client *client, const char *method, const uint8_t *request, size_t request_length, uint8_t **response,
                       size_t *response_length, const char *idempotency_key, lc_error *error) {
    int64_t deadline = monotonic_ms() + client->timeout_ms;
    int status = connect_gateway(client, deadline, error);
    if (status != LC_OK) return status;
    Licensing__V1__Envelope envelope = LICENSING__V1__ENVELOPE__INIT;
    Licensing__V1__MetadataEntry authorization = LICENSING__V1__METADATA_ENTRY__INIT, idempotency = LICENSING__V1__METADATA_ENTRY__INIT;
    Licensing__V1__MetadataEntry *entries[2] = {&authorization, &idempotency};
    authorization.key = "authorization";
    authorization.value = client->api_key;
    idempotency.key = "idempotency-key";
    idempotency.value = (char *)idempotency_key;
    envelope.call_id = ++client->next_call;
    envelope.kind = LICENSING__V1__FRAME_KIND__FRAME_KIND_REQUEST;
    envelope.method = (char *)method;
    envelope.payload.data = (uint8_t *)request;
    envelope.payload.len = request_length;
    envelope.timeout_micros = (int64_t)client->timeout_ms * 1000;
    envelope.n_metadata = idempotency_key ? 2 : 1;
    envelope.metadata = entries;
    size_t size = licensing__v1__envelope__get_packed_size(&envelope);
    uint8_t *frame = malloc(4 + size);
    if (!frame) return fail(error, LC_NO_MEMORY, "out of memory");
    frame[0] = (uint8_t)(size >> 24), frame[1] = (uint8_t)(size >> 16), frame[2] = (uint8_t)(size >> 8), frame[3] = (uint8_t)size;
    licensing__v1__envelope__pack(&envelope, frame + 4);
    set_timeouts(client->fd, deadline - monotonic_ms());
    int written = write_all(client, frame, 4 + size);
    free(frame);
    if (written != 0) {
        disconnect(client);
        return fail(error, LC_UNAVAILABLE, "the gateway closed the connection");
    }
    for (;;) {
        uint8_t header[4];
        set_timeouts(client->fd, deadline - monotonic_ms());
        int got = read_exactly(client, header, 4);
        if (got != 0 || monotonic_ms() > deadline) {
            disconnect(client);
            return got == -2 || monotonic_ms() > deadline ? fail(error, LC_DEADLINE_EXCEEDED, "%s did not answer within %d ms", method, client->timeout_ms)
                                                          : fail(error, LC_UNAVAILABLE, "the gateway closed the connection");
        }
        uint32_t length = (uint32_t)header[0] << 24 | (uint32_t)header[1] << 16 | (uint32_t)header[2] << 8 | header[3];
        if (length > MAX_FRAME) {
            disconnect(client);
            return fail(error, LC_INTERNAL, "a frame of %u bytes is over the 4 MiB limit", length);
        }
        uint8_t *body = malloc(length ? length : 1);
        if (!body) return fail(error, LC_NO_MEMORY, "out of memory");
        set_timeouts(client->fd, deadline - monotonic_ms());
        got = read_exactly(client, body, length);
        if (got != 0) {
            free(body);
            disconnect(client);
            return got == -2 ? fail(error, LC_DEADLINE_EXCEEDED, "%s did not answer within %d ms", method, client->timeout_ms)
                             : fail(error, LC_UNAVAILABLE, "the gateway closed the connection");
        }
        Licensing__V1__Envelope *answer = licensing__v1__envelope__unpack(NULL, length, body);
        free(body);
        if (!answer) {
            disconnect(client);
            return fail(error, LC_INTERNAL, "the gateway sent a frame that does not decode");
        }
        if (answer->call_id != envelope.call_id) {
            licensing__v1__envelope__free_unpacked(answer, NULL);
            continue;
        }
        if (answer->status && answer->status->code != LICENSING__V1__STATUS_CODE__STATUS_CODE_OK) {
            status = fail(error, (int)answer->status->code, "%s", answer->status->message ? answer->status->message : "");
            licensing__v1__envelope__free_unpacked(answer, NULL);
            return status;
        }
        *response_length = answer->payload.len;
        *response = malloc(answer->payload.len ? answer->payload.len : 1);
        if (!*response) {
            licensing__v1__envelope__free_unpacked(answer, NULL);
            return fail(error, LC_NO_MEMORY, "out of memory");
        }
        memcpy(*response, answer->payload.data, answer->payload.len);
        licensing__v1__envelope__free_unpacked(answer, NULL);
        return ok(error);
    }
}

/* Packs `message`, calls, and unpacks the answer with `descriptor`. */
static int call_message(lc_client *client, const char *method, const ProtobufCMessage *message, const ProtobufCMessageDescriptor *descriptor,
                        ProtobufCMessage **answer, const char *idempotency_key, lc_error *error) {
    size_t size = protobuf_c_message_get_packed_size(message);
    uint8_t *request = malloc(size ? size : 1);
    if (!request) return fail(error, LC_NO_MEMORY, "out of memory");
    protobuf_c_message_pack(message, request);
    uint8_t *response = NULL;
    size_t response_length = 0;
    pthread_mutex_lock(&client->lock);
    int status = call_locked(client, method, request, size, &response, &response_length, idempotency_key, error);
    pthread_mutex_unlock(&client->lock);
    free(request);
    if (status != LC_OK) return status;
    *answer = protobuf_c_message_unpack(descriptor, NULL, response_length, response);
    free(response);
    if (!*answer) return fail(error, LC_INTERNAL, "the answer to %s does not decode", method);
    return ok(error);
}

int lc_call(lc_client *client, const char *method, const uint8_t *request, size_t request_length, uint8_t **response, size_t *response_length, lc_error *error) {
    if (!client || !method || !response || !response_length) return fail(error, LC_INVALID_ARGUMENT, "client, method and response are required");
    pthread_mutex_lock(&client->lock);
    int status = call_locked(client, method, request, request_length, response, response_length, NULL, error);
    pthread_mutex_unlock(&client->lock);
    return status;
}

/* ---- handle ----------------------------------------------------------------------- */

int lc_client_new(const lc_config *config, lc_client **out, lc_error *error) {
    if (!config || !out || !config->endpoint || !config->api_key) return fail(error, LC_INVALID_ARGUMENT, "endpoint and api_key are required");
    *out = NULL;
    int tcp = strncmp(config->endpoint, "unix:", 5) != 0;
    if (tcp && !config->ca_file) return fail(error, LC_INVALID_ARGUMENT, "a TCP gateway needs ca_file: the CA its certificate must chain to");
    lc_client *client = calloc(1, sizeof *client);
    if (!client) return fail(error, LC_NO_MEMORY, "out of memory");
    client->fd = -1;
    client->endpoint = copy(config->endpoint);
    client->api_key = copy(config->api_key);
    client->ca_file = copy(config->ca_file);
    client->timeout_ms = config->timeout_ms > 0 ? config->timeout_ms : 10000;
    client->offline_grace_seconds = config->offline_grace_seconds;
    client->max_clock_skew_seconds = config->max_clock_skew_seconds > 0 ? config->max_clock_skew_seconds : 300;
    client->clock = config->clock;
    client->clock_context = config->clock_context;
    pthread_mutex_init(&client->lock, NULL);
    if (!client->endpoint || !client->api_key || (config->ca_file && !client->ca_file)) {
        lc_client_free(client);
        return fail(error, LC_NO_MEMORY, "out of memory");
    }
    if (tcp) {
        client->ssl_context = SSL_CTX_new(TLS_client_method());
        if (!client->ssl_context || SSL_CTX_set_min_proto_version(client->ssl_context, TLS1_2_VERSION) != 1 ||
            SSL_CTX_load_verify_locations(client->ssl_context, client->ca_file, NULL) != 1) {
            ERR_clear_error();
            lc_client_free(client);
            return fail(error, LC_INVALID_ARGUMENT, "cannot load the CA file %s", config->ca_file);
        }
        SSL_CTX_set_verify(client->ssl_context, SSL_VERIFY_PEER, NULL);
    }
    *out = client;
    return ok(error);
}

int lc_client_pin_key(lc_client *client, const char *kid, const unsigned char public_key[32], lc_error *error) {
    if (!client || !kid || !public_key || strlen(kid) >= sizeof client->keys[0].kid) return fail(error, LC_INVALID_ARGUMENT, "a kid and a 32-byte key are required");
    pthread_mutex_lock(&client->lock);
    if (client->key_count == MAX_KEYS) {
        pthread_mutex_unlock(&client->lock);
        return fail(error, LC_RESOURCE_EXHAUSTED, "at most %d keys are pinned", MAX_KEYS);
    }
    struct pinned_key *key = &client->keys[client->key_count++];
    strcpy(key->kid, kid);
    memcpy(key->key, public_key, 32);
    pthread_mutex_unlock(&client->lock);
    return ok(error);
}

void lc_validation_clear(lc_validation *validation) {
    if (!validation) return;
    for (size_t index = 0; index < validation->feature_count; index++) free(validation->features[index]);
    free(validation->features);
    validation->features = NULL;
    validation->feature_count = 0;
}

void lc_client_free(lc_client *client) {
    if (!client) return;
    disconnect(client);
    if (client->ssl_context) SSL_CTX_free(client->ssl_context);
    for (struct grace_entry *entry = client->grace, *next; entry; entry = next) {
        next = entry->next;
        free(entry->id);
        lc_validation_clear(&entry->answer);
        free(entry);
    }
    for (size_t index = 0; index < client->usage_count; index++) {
        free(client->usage[index].license_key);
        free(client->usage[index].feature);
    }
    free(client->usage);
    free(client->endpoint);
    free(client->api_key);
    free(client->ca_file);
    pthread_mutex_destroy(&client->lock);
    free(client);
}

/* ---- validation --------------------------------------------------------------------- */

static const struct pinned_key *pinned(lc_client *client, const char *kid) {
    for (size_t index = 0; index < client->key_count; index++)
        if (strcmp(client->keys[index].kid, kid) == 0) return &client->keys[index];
    return NULL;
}

static int ed25519_verifies(const unsigned char key[32], const uint8_t *signature, size_t signature_length, const uint8_t *message, size_t length) {
    EVP_PKEY *public_key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, key, 32);
    if (!public_key) return 0;
    EVP_MD_CTX *context = EVP_MD_CTX_new();
    int verified = context && EVP_DigestVerifyInit(context, NULL, NULL, NULL, public_key) == 1 &&
                   EVP_DigestVerify(context, signature, signature_length, message, length) == 1;
    EVP_MD_CTX_free(context);
    EVP_PKEY_free(public_key);
    ERR_clear_error();
    return verified;
}

static int copy_features(lc_validation *out, size_t count, char **features) {
    out->features = count ? calloc(count, sizeof(char *)) : NULL;
    if (count && !out->features) return -1;
    for (size_t index = 0; index < count; index++) {
        out->features[index] = strdup(features[index]);
        if (!out->features[index]) return -1;
        out->feature_count = index + 1;
    }
    return 0;
}

static char *grace_id(const char *key, const char *fingerprint, const char *feature) {
    size_t length = strlen(key) + strlen(fingerprint) + strlen(feature) + 3;
    char *id = malloc(length);
    if (id) snprintf(id, length, "%s\n%s\n%s", key, fingerprint, feature);
    return id;
}

static void remember(lc_client *client, const char *id, const lc_validation *answer, int valid) {
    pthread_mutex_lock(&client->lock);
    struct grace_entry **link = &client->grace;
    while (*link && strcmp((*link)->id, id) != 0) link = &(*link)->next;
    if (*link) {
        struct grace_entry *old = *link;
        *link = old->next;
        free(old->id);
        lc_validation_clear(&old->answer);
        free(old);
    }
    if (valid) {
        struct grace_entry *entry = calloc(1, sizeof *entry);
        if (entry && (entry->id = strdup(id)) != NULL) {
            entry->answer = *answer;
            entry->answer.features = NULL;
            entry->answer.feature_count = 0;
            if (copy_features(&entry->answer, answer->feature_count, answer->features) == 0) {
                entry->verified_at = now_seconds(client);
                entry->next = client->grace;
                client->grace = entry;
            } else {
                lc_validation_clear(&entry->answer);
                free(entry->id);
                free(entry);
            }
        } else {
            free(entry);
        }
    }
    pthread_mutex_unlock(&client->lock);
}

static int offline(lc_client *client, const char *id, lc_validation *out, const lc_error *cause, lc_error *error) {
    int status = cause->code;
    pthread_mutex_lock(&client->lock);
    struct grace_entry *entry = client->grace;
    while (entry && strcmp(entry->id, id) != 0) entry = entry->next;
    int64_t now = now_seconds(client);
    if (client->offline_grace_seconds <= 0 || !entry) {
        pthread_mutex_unlock(&client->lock);
        if (error && error != cause) *error = *cause;
        return status;
    }
    if (now - entry->verified_at > client->offline_grace_seconds) {
        int64_t ended = entry->verified_at + client->offline_grace_seconds;
        pthread_mutex_unlock(&client->lock);
        return fail(error, LC_UNAVAILABLE, "the gateway cannot be reached and the offline grace ended at %lld (%s)", (long long)ended, cause->message);
    }
    *out = entry->answer;
    out->features = NULL;
    out->feature_count = 0;
    out->offline_since = entry->verified_at;
    int copied = copy_features(out, entry->answer.feature_count, entry->answer.features);
    pthread_mutex_unlock(&client->lock);
    if (copied != 0) {
        lc_validation_clear(out);
        return fail(error, LC_NO_MEMORY, "out of memory");
    }
    int64_t end = out->grace_ends_at ? out->grace_ends_at : out->expires_at;
    if (out->expires_at != 0 && end <= now) {
        out->reason = LC_REASON_EXPIRED;
        out->valid = 0;
    }
    return ok(error);
}

int lc_validate(lc_client *client, const char *license_key, const char *fingerprint, const char *feature, lc_validation *out, lc_error *error) {
    if (!client || !license_key || !out) return fail(error, LC_INVALID_ARGUMENT, "client, license_key and out are required");
    memset(out, 0, sizeof *out);
    fingerprint = fingerprint ? fingerprint : "";
    feature = feature ? feature : "";
    uint8_t nonce[16];
    if (RAND_bytes(nonce, sizeof nonce) != 1) return fail(error, LC_INTERNAL, "no random bytes for the nonce");
    char *id = grace_id(license_key, fingerprint, feature);
    if (!id) return fail(error, LC_NO_MEMORY, "out of memory");
    Licensing__V1__ValidateRequest request = LICENSING__V1__VALIDATE_REQUEST__INIT;
    request.license_key = (char *)license_key;
    request.fingerprint = (char *)fingerprint;
    request.feature = (char *)feature;
    request.nonce.data = nonce;
    request.nonce.len = sizeof nonce;
    ProtobufCMessage *message = NULL;
    lc_error cause;
    int status = call_message(client, "licensing.v1.Validation/Validate", &request.base, &licensing__v1__validate_response__descriptor, &message, NULL, &cause);
    if (status == LC_UNAVAILABLE || status == LC_DEADLINE_EXCEEDED) {
        status = offline(client, id, out, &cause, error);
        free(id);
        return status;
    }
    if (status != LC_OK) {
        free(id);
        if (error) *error = cause;
        return status;
    }
    Licensing__V1__ValidateResponse *response = (Licensing__V1__ValidateResponse *)message;
    Licensing__V1__ValidationStatement *statement = NULL;
    pthread_mutex_lock(&client->lock);
    const struct pinned_key *key = response->kid ? pinned(client, response->kid) : NULL;
    unsigned char key_bytes[32];
    if (key) memcpy(key_bytes, key->key, 32);
    pthread_mutex_unlock(&client->lock);
    if (!response->statement.len || !response->signature.len) {
        status = fail(error, LC_UNVERIFIED, "the answer is not signed");
    } else if (!key) {
        status = fail(error, LC_UNVERIFIED, "the answer was signed by key %s, which is not in the public key set", response->kid);
    } else if (!ed25519_verifies(key_bytes, response->signature.data, response->signature.len, response->statement.data, response->statement.len)) {
        status = fail(error, LC_UNVERIFIED, "the answer's signature does not verify: forged or altered");
    } else if (!(statement = licensing__v1__validation_statement__unpack(NULL, response->statement.len, response->statement.data))) {
        status = fail(error, LC_UNVERIFIED, "the signed statement does not decode");
    } else if (statement->nonce.len != sizeof nonce || memcmp(statement->nonce.data, nonce, sizeof nonce) != 0) {
        status = fail(error, LC_UNVERIFIED, "the answer is for another request (nonce differs): a replay");
    } else if (llabs(statement->server_time - now_seconds(client)) > client->max_clock_skew_seconds) {
        status = fail(error, LC_UNVERIFIED, "the answer was made at %lld, too far from now", (long long)statement->server_time);
    } else if (statement->reason != response->reason || strcmp(statement->license_id, response->license_id) != 0) {
        status = fail(error, LC_UNVERIFIED, "the answer's fields differ from its signed statement");
    } else {
        out->reason = (int)statement->reason;
        out->valid = out->reason == LC_REASON_VALID || out->reason == LC_REASON_IN_GRACE;
        snprintf(out->license_id, sizeof out->license_id, "%s", statement->license_id);
        out->expires_at = statement->expires_at;
        out->grace_ends_at = statement->grace_ends_at;
        out->server_time = statement->server_time;
        if (copy_features(out, statement->n_features, statement->features) != 0) {
            lc_validation_clear(out);
            status = fail(error, LC_NO_MEMORY, "out of memory");
        } else {
            remember(client, id, out, out->valid);
            status = ok(error);
        }
    }
    if (statement) licensing__v1__validation_statement__free_unpacked(statement, NULL);
    protobuf_c_message_free_unpacked(message, NULL);
    free(id);
    return status;
}

/* ---- machines ------------------------------------------------------------------------ */

int lc_activate(lc_client *client, const char *license_key, const char *fingerprint, const char *machine_name, int *reason, lc_error *error) {
    if (!client || !license_key || !fingerprint) return fail(error, LC_INVALID_ARGUMENT, "client, license_key and fingerprint are required");
    Licensing__V1__ActivateRequest request = LICENSING__V1__ACTIVATE_REQUEST__INIT;
    request.license_key = (char *)license_key;
    request.fingerprint = (char *)fingerprint;
    if (machine_name) request.machine_name = (char *)machine_name;
    ProtobufCMessage *message = NULL;
    int status = call_message(client, "licensing.v1.Validation/Activate", &request.base, &licensing__v1__activate_response__descriptor, &message, NULL, error);
    if (status != LC_OK) return status;
    Licensing__V1__ActivateResponse *response = (Licensing__V1__ActivateResponse *)message;
    if (reason) *reason = (int)response->reason;
    if (response->reason != LICENSING__V1__REASON_CODE__REASON_CODE_VALID)
        status = fail(error, LC_FAILED_PRECONDITION, "not activated: %s", response->detail && *response->detail ? response->detail : "refused");
    protobuf_c_message_free_unpacked(message, NULL);
    return status;
}

int lc_deactivate(lc_client *client, const char *license_key, const char *fingerprint, int *deactivated, lc_error *error) {
    if (!client || !license_key || !fingerprint) return fail(error, LC_INVALID_ARGUMENT, "client, license_key and fingerprint are required");
    Licensing__V1__DeactivateRequest request = LICENSING__V1__DEACTIVATE_REQUEST__INIT;
    request.license_key = (char *)license_key;
    request.fingerprint = (char *)fingerprint;
    ProtobufCMessage *message = NULL;
    int status = call_message(client, "licensing.v1.Validation/Deactivate", &request.base, &licensing__v1__deactivate_response__descriptor, &message, NULL, error);
    if (status != LC_OK) return status;
    if (deactivated) *deactivated = ((Licensing__V1__DeactivateResponse *)message)->deactivated;
    protobuf_c_message_free_unpacked(message, NULL);
    return LC_OK;
}

/* ---- seats ----------------------------------------------------------------------------- */

static int seat_call(lc_seat *seat, const char *method, lc_error *error) {
    Licensing__V1__SeatLeaseRequest request = LICENSING__V1__SEAT_LEASE_REQUEST__INIT;
    request.lease_id = seat->lease_id;
    request.license_key = seat->license_key;
    ProtobufCMessage *message = NULL;
    int status = call_message(seat->client, method, &request.base, &licensing__v1__seat_lease_response__descriptor, &message, NULL, error);
    if (status != LC_OK) return status;
    int reason = (int)((Licensing__V1__SeatLeaseResponse *)message)->reason;
    protobuf_c_message_free_unpacked(message, NULL);
    return reason == LC_REASON_VALID ? LC_OK : fail(error, LC_FAILED_PRECONDITION, "the seat was lost (reason %d)", reason);
}

static void *heartbeat(void *argument) {
    lc_seat *seat = argument;
    pthread_mutex_lock(&seat->lock);
    while (!seat->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += seat->interval_ms / 1000;
        until.tv_nsec += (seat->interval_ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) until.tv_sec++, until.tv_nsec -= 1000000000;
        int waited = 0;
        while (!seat->stopping && waited != ETIMEDOUT) waited = pthread_cond_timedwait(&seat->wake, &seat->lock, &until);
        if (seat->stopping) break;
        pthread_mutex_unlock(&seat->lock);
        lc_error error;
        int held = seat_call(seat, "licensing.v1.Validation/HeartbeatSeat", &error) == LC_OK;
        pthread_mutex_lock(&seat->lock);
        seat->held = held;
    }
    pthread_mutex_unlock(&seat->lock);
    return NULL;
}

int lc_seat_checkout(lc_client *client, const char *license_key, const char *client_id, int64_t ttl_seconds, lc_seat **out, lc_error *error) {
    if (!client || !license_key || !client_id || !out) return fail(error, LC_INVALID_ARGUMENT, "client, license_key, client_id and out are required");
    *out = NULL;
    Licensing__V1__CheckoutSeatRequest request = LICENSING__V1__CHECKOUT_SEAT_REQUEST__INIT;
    request.license_key = (char *)license_key;
    request.client_id = (char *)client_id;
    request.ttl_seconds = ttl_seconds;
    ProtobufCMessage *message = NULL;
    int status = call_message(client, "licensing.v1.Validation/CheckoutSeat", &request.base, &licensing__v1__seat_lease_response__descriptor, &message, NULL, error);
    if (status != LC_OK) return status;
    Licensing__V1__SeatLeaseResponse *response = (Licensing__V1__SeatLeaseResponse *)message;
    if (response->reason != LICENSING__V1__REASON_CODE__REASON_CODE_VALID || !response->lease) {
        status = fail(error, LC_FAILED_PRECONDITION, "no seat (reason %d)%s%s", (int)response->reason, response->detail && *response->detail ? ": " : "",
                      response->detail ? response->detail : "");
        protobuf_c_message_free_unpacked(message, NULL);
        return status;
    }
    lc_seat *seat = calloc(1, sizeof *seat);
    if (seat) {
        seat->client = client;
        seat->license_key = strdup(license_key);
        seat->lease_id = strdup(response->lease->lease_id);
        int64_t ttl = response->lease->expires_at - response->lease->acquired_at;
        seat->interval_ms = (ttl < 3 ? 3 : ttl) * 1000 / 3;
        seat->held = 1;
    }
    protobuf_c_message_free_unpacked(message, NULL);
    if (!seat || !seat->license_key || !seat->lease_id) {
        if (seat) free(seat->license_key), free(seat->lease_id), free(seat);
        return fail(error, LC_NO_MEMORY, "out of memory");
    }
    pthread_mutex_init(&seat->lock, NULL);
    pthread_cond_init(&seat->wake, NULL);
    if (pthread_create(&seat->thread, NULL, heartbeat, seat) != 0) {
        pthread_mutex_destroy(&seat->lock);
        pthread_cond_destroy(&seat->wake);
        free(seat->license_key), free(seat->lease_id), free(seat);
        return fail(error, LC_INTERNAL, "cannot start the heartbeat thread");
    }
    *out = seat;
    return ok(error);
}

int lc_seat_held(lc_seat *seat) {
    if (!seat) return 0;
    pthread_mutex_lock(&seat->lock);
    int held = seat->held;
    pthread_mutex_unlock(&seat->lock);
    return held;
}

int lc_seat_checkin(lc_seat *seat, lc_error *error) {
    if (!seat) return fail(error, LC_INVALID_ARGUMENT, "no seat");
    pthread_mutex_lock(&seat->lock);
    seat->stopping = 1;
    pthread_cond_signal(&seat->wake);
    pthread_mutex_unlock(&seat->lock);
    pthread_join(seat->thread, NULL);
    int status = seat_call(seat, "licensing.v1.Validation/CheckinSeat", error);
    pthread_mutex_destroy(&seat->lock);
    pthread_cond_destroy(&seat->wake);
    free(seat->license_key);
    free(seat->lease_id);
    free(seat);
    return status;
}

/* ---- usage ------------------------------------------------------------------------------- */

int lc_usage_record(lc_client *client, const char *license_key, const char *feature, uint64_t quantity, lc_error *error) {
    if (!client || !license_key || !feature) return fail(error, LC_INVALID_ARGUMENT, "client, license_key and feature are required");
    unsigned char random[16];
    if (RAND_bytes(random, sizeof random) != 1) return fail(error, LC_INTERNAL, "no random bytes for the event id");
    pthread_mutex_lock(&client->lock);
    if (client->usage_count == client->usage_capacity) {
        size_t capacity = client->usage_capacity ? client->usage_capacity * 2 : 64;
        struct usage_event *grown = realloc(client->usage, capacity * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&client->lock);
            return fail(error, LC_NO_MEMORY, "out of memory");
        }
        client->usage = grown;
        client->usage_capacity = capacity;
    }
    struct usage_event *event = &client->usage[client->usage_count];
    for (int index = 0; index < 16; index++) snprintf(event->id + index * 2, 3, "%02x", random[index]);
    event->license_key = strdup(license_key);
    event->feature = strdup(feature);
    event->quantity = quantity;
    event->at = now_seconds(client);
    int stored = event->license_key && event->feature;
    if (stored) client->usage_count++;
    else free(event->license_key), free(event->feature);
    pthread_mutex_unlock(&client->lock);
    return stored ? ok(error) : fail(error, LC_NO_MEMORY, "out of memory");
}

int lc_usage_flush(lc_client *client, uint32_t *accepted, lc_error *error) {
    if (!client) return fail(error, LC_INVALID_ARGUMENT, "no client");
    if (accepted) *accepted = 0;
    for (;;) {
        pthread_mutex_lock(&client->lock);
        size_t count = client->usage_count < 1000 ? client->usage_count : 1000;
        if (count == 0) {
            pthread_mutex_unlock(&client->lock);
            return ok(error);
        }
        Licensing__V1__UsageEvent *events = calloc(count, sizeof *events);
        Licensing__V1__UsageEvent **pointers = calloc(count, sizeof *pointers);
        if (!events || !pointers) {
            pthread_mutex_unlock(&client->lock);
            free(events), free(pointers);
            return fail(error, LC_NO_MEMORY, "out of memory");
        }
        for (size_t index = 0; index < count; index++) {
            licensing__v1__usage_event__init(&events[index]);
            events[index].event_id = client->usage[index].id;
            events[index].license_key = client->usage[index].license_key;
            events[index].feature = client->usage[index].feature;
            events[index].quantity = client->usage[index].quantity;
            events[index].occurred_at = client->usage[index].at;
            pointers[index] = &events[index];
        }
        Licensing__V1__RecordUsageRequest request = LICENSING__V1__RECORD_USAGE_REQUEST__INIT;
        request.n_events = count;
        request.events = pointers;
        size_t size = licensing__v1__record_usage_request__get_packed_size(&request);
        uint8_t *bytes = malloc(size ? size : 1);
        uint8_t *response = NULL;
        size_t response_length = 0;
        int status = bytes ? (licensing__v1__record_usage_request__pack(&request, bytes),
                              call_locked(client, "licensing.v1.Usage/RecordUsage", bytes, size, &response, &response_length, NULL, error))
                           : fail(error, LC_NO_MEMORY, "out of memory");
        free(bytes);
        free(events);
        free(pointers);
        if (status == LC_OK) {
            /* Sent: drop what went. A failed batch stays for the next flush (ids make a resend safe). */
            for (size_t index = 0; index < count; index++) free(client->usage[index].license_key), free(client->usage[index].feature);
            memmove(client->usage, client->usage + count, (client->usage_count - count) * sizeof *client->usage);
            client->usage_count -= count;
        }
        pthread_mutex_unlock(&client->lock);
        if (status != LC_OK) return status;
        Licensing__V1__RecordUsageResponse *answer = licensing__v1__record_usage_response__unpack(NULL, response_length, response);
        free(response);
        if (!answer) return fail(error, LC_INTERNAL, "the usage answer does not decode");
        if (accepted) *accepted += answer->accepted;
        licensing__v1__record_usage_response__free_unpacked(answer, NULL);
    }
}

/* ---- offline files ----------------------------------------------------------------------- */

static uint8_t *unarmor(const char *text, size_t *length) {
    const char *begin = strstr(text, "-----BEGIN LICENSE CERTIFICATE-----");
    const char *end = begin ? strstr(begin, "-----END LICENSE CERTIFICATE-----") : NULL;
    if (!begin || !end) return NULL;
    begin += strlen("-----BEGIN LICENSE CERTIFICATE-----");
    size_t capacity = (size_t)(end - begin);
    char *base64 = malloc(capacity + 1);
    if (!base64) return NULL;
    size_t used = 0;
    for (const char *cursor = begin; cursor < end; cursor++)
        if (*cursor != '\n' && *cursor != '\r' && *cursor != ' ' && *cursor != '\t') base64[used++] = *cursor;
    base64[used] = 0;
    if (used == 0 || used % 4 != 0) {
        free(base64);
        return NULL;
    }
    uint8_t *bytes = malloc(used / 4 * 3 + 1);
    int decoded = bytes ? EVP_DecodeBlock(bytes, (const unsigned char *)base64, (int)used) : -1;
    if (decoded < 0) {
        free(base64), free(bytes);
        return NULL;
    }
    size_t padding = (base64[used - 1] == '=') + (base64[used - 2] == '=');
    free(base64);
    *length = (size_t)decoded - padding;
    return bytes;
}

int lc_verify_offline_file(lc_client *client, const char *file, const char *fingerprint, int64_t last_seen, int64_t *new_last_seen, lc_error *error) {
    if (!client || !file || !fingerprint) return fail(error, LC_INVALID_ARGUMENT, "client, file and fingerprint are required");
    int64_t now = now_seconds(client);
    if (last_seen > now + 300) return fail(error, LC_UNVERIFIED, "the clock reads %lld but %lld was already seen: it has been set back", (long long)now, (long long)last_seen);
    size_t length = 0;
    uint8_t *bytes = unarmor(file, &length);
    if (!bytes) return fail(error, LC_UNVERIFIED, "this is not a license file (an encrypted one needs the Swift or server tools)");
    Licensing__V1__SignedCertificate *signed_certificate = licensing__v1__signed_certificate__unpack(NULL, length, bytes);
    free(bytes);
    if (!signed_certificate) return fail(error, LC_UNVERIFIED, "the license file does not decode");
    int status;
    pthread_mutex_lock(&client->lock);
    const struct pinned_key *key = pinned(client, signed_certificate->kid);
    unsigned char key_bytes[32];
    if (key) memcpy(key_bytes, key->key, 32);
    pthread_mutex_unlock(&client->lock);
    Licensing__V1__CertificatePayload *payload = NULL;
    unsigned char digest[32];
    char hex[65];
    if (!key) {
        status = fail(error, LC_UNVERIFIED, "the file was signed by key %s, which is not in the public key set", signed_certificate->kid);
    } else if (!ed25519_verifies(key_bytes, signed_certificate->signature.data, signed_certificate->signature.len, signed_certificate->payload.data,
                                 signed_certificate->payload.len)) {
        status = fail(error, LC_UNVERIFIED, "the file's signature does not verify: it was altered or forged");
    } else if (!(payload = licensing__v1__certificate_payload__unpack(NULL, signed_certificate->payload.len, signed_certificate->payload.data))) {
        status = fail(error, LC_UNVERIFIED, "the file's payload does not decode");
    } else if (payload->not_before > now + 300) {
        status = fail(error, LC_UNVERIFIED, "the clock reads %lld but the file is valid only from %lld: it has been set back", (long long)now, (long long)payload->not_before);
    } else if (now < payload->not_before) {
        status = fail(error, LC_UNVERIFIED, "the file is valid only from %lld", (long long)payload->not_before);
    } else if (now >= payload->not_after) {
        status = fail(error, LC_UNVERIFIED, "the file expired at %lld", (long long)payload->not_after);
    } else if (!payload->fingerprint_sha256 || !*payload->fingerprint_sha256) {
        status = fail(error, LC_UNVERIFIED, "the file is not bound to a machine");
    } else if (EVP_Digest(fingerprint, strlen(fingerprint), digest, NULL, EVP_sha256(), NULL) != 1) {
        status = fail(error, LC_INTERNAL, "SHA-256 failed");
    } else {
        for (int index = 0; index < 32; index++) snprintf(hex + index * 2, 3, "%02x", digest[index]);
        if (strcmp(hex, payload->fingerprint_sha256) != 0) {
            status = fail(error, LC_UNVERIFIED, "the file is bound to another machine");
        } else {
            if (new_last_seen) *new_last_seen = last_seen > now ? last_seen : now;
            status = ok(error);
        }
    }
    if (payload) licensing__v1__certificate_payload__free_unpacked(payload, NULL);
    licensing__v1__signed_certificate__free_unpacked(signed_certificate, NULL);
    return status;
}

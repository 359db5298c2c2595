/* The C client's suite: against a live stack (Tests/EndToEndTests/CClientTests.swift starts
 * and seeds it, passing what it made in the environment) and against a stand-in gateway in
 * a thread for what a client must refuse. Exit 0 when every check passed. */
#define _GNU_SOURCE
#include "licensing_client.h"

#include <CLicensingProto.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int failures = 0;
#define CHECK(condition, ...)                                           \
    do {                                                                \
        if (!(condition)) {                                             \
            failures++;                                                 \
            fprintf(stderr, "FAILED %s:%d: ", __FILE__, __LINE__);      \
            fprintf(stderr, __VA_ARGS__);                               \
            fprintf(stderr, "\n");                                      \
        }                                                               \
    } while (0)

static const char *env(const char *name) {
    const char *value = getenv(name);
    if (!value) {
        fprintf(stderr, "%s is not set\n", name);
        exit(2);
    }
    return value;
}

static void hex_key(const char *hex, unsigned char key[32]) {
    for (int index = 0; index < 32; index++) {
        unsigned int byte = 0;
        sscanf(hex + index * 2, "%2x", &byte);
        key[index] = (unsigned char)byte;
    }
}

/* An injected clock. */
static int64_t fake_now;
static int64_t fake_clock(void *context) { return fake_now; }

/* ---- a stand-in gateway ----------------------------------------------------------------- */

struct fake {
    int listener;
    int port;
    char path[108];
    SSL_CTX *tls;
    EVP_PKEY *key;
    char kid[32];
    unsigned char public_key[32];
    _Atomic int mode; /* 0 genuine, 1 forged, 2 replayed, 3 altered, 4 slow */
    _Atomic int stop;
    pthread_t thread;
    pthread_mutex_t lock;
    int fds[64];
    int fd_count;
};

static int read_all(SSL *ssl, int fd, uint8_t *data, size_t length) {
    while (length) {
        ssize_t got = ssl ? SSL_read(ssl, data, (int)length) : read(fd, data, length);
        if (got <= 0) return -1;
        data += got, length -= (size_t)got;
    }
    return 0;
}

static void serve(struct fake *fake, int fd) {
    SSL *ssl = NULL;
    if (fake->tls) {
        ssl = SSL_new(fake->tls);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) != 1) {
            ERR_clear_error();
            SSL_free(ssl);
            close(fd);
            return;
        }
    }
    uint8_t header[4];
    while (!fake->stop && read_all(ssl, fd, header, 4) == 0) {
        uint32_t length = (uint32_t)header[0] << 24 | (uint32_t)header[1] << 16 | (uint32_t)header[2] << 8 | header[3];
        uint8_t *body = malloc(length ? length : 1);
        if (read_all(ssl, fd, body, length) != 0) {
            free(body);
            break;
        }
        Licensing__V1__Envelope *request = licensing__v1__envelope__unpack(NULL, length, body);
        free(body);
        if (!request) break;
        Licensing__V1__ValidateRequest *validate = licensing__v1__validate_request__unpack(NULL, request->payload.len, request->payload.data);
        if (fake->mode == 4) sleep(2);
        uint8_t replayed[16];
        memset(replayed, 7, sizeof replayed);
        Licensing__V1__ValidationStatement statement = LICENSING__V1__VALIDATION_STATEMENT__INIT;
        char *features[] = {"render"};
        statement.version = 1;
        statement.reason = LICENSING__V1__REASON_CODE__REASON_CODE_VALID;
        statement.license_id = "lic_1";
        statement.n_features = 1;
        statement.features = features;
        statement.server_time = time(NULL);
        if (fake->mode == 2) {
            statement.nonce.data = replayed;
            statement.nonce.len = sizeof replayed;
        } else if (validate) {
            statement.nonce = validate->nonce;
        }
        size_t statement_length = licensing__v1__validation_statement__get_packed_size(&statement);
        uint8_t *statement_bytes = malloc(statement_length);
        licensing__v1__validation_statement__pack(&statement, statement_bytes);
        uint8_t signature[64];
        size_t signature_length = sizeof signature;
        EVP_MD_CTX *context = EVP_MD_CTX_new();
        EVP_DigestSignInit(context, NULL, NULL, NULL, fake->key);
        EVP_DigestSign(context, signature, &signature_length, statement_bytes, statement_length);
        EVP_MD_CTX_free(context);
        if (fake->mode == 1) signature[0] ^= 1;
        Licensing__V1__ValidateResponse response = LICENSING__V1__VALIDATE_RESPONSE__INIT;
        response.reason = LICENSING__V1__REASON_CODE__REASON_CODE_VALID;
        response.valid = 1;
        response.license_id = fake->mode == 3 ? "lic_2" : "lic_1";
        response.kid = fake->kid;
        response.signature.data = signature;
        response.signature.len = signature_length;
        response.statement.data = statement_bytes;
        response.statement.len = statement_length;
        size_t response_length = licensing__v1__validate_response__get_packed_size(&response);
        uint8_t *response_bytes = malloc(response_length);
        licensing__v1__validate_response__pack(&response, response_bytes);
        Licensing__V1__Envelope answer = LICENSING__V1__ENVELOPE__INIT;
        answer.call_id = request->call_id;
        answer.kind = LICENSING__V1__FRAME_KIND__FRAME_KIND_RESPONSE;
        answer.payload.data = response_bytes;
        answer.payload.len = response_length;
        size_t frame_length = licensing__v1__envelope__get_packed_size(&answer);
        uint8_t *frame = malloc(frame_length + 4);
        frame[0] = (uint8_t)(frame_length >> 24), frame[1] = (uint8_t)(frame_length >> 16), frame[2] = (uint8_t)(frame_length >> 8), frame[3] = (uint8_t)frame_length;
        licensing__v1__envelope__pack(&answer, frame + 4);
        int sent = ssl ? SSL_write(ssl, frame, (int)frame_length + 4) > 0 : send(fd, frame, frame_length + 4, MSG_NOSIGNAL) >= 0;
        free(frame), free(response_bytes), free(statement_bytes);
        if (validate) licensing__v1__validate_request__free_unpacked(validate, NULL);
        licensing__v1__envelope__free_unpacked(request, NULL);
        if (!sent) break;
    }
    if (ssl) SSL_free(ssl);
    close(fd);
}

struct connection {
    struct fake *fake;
    int fd;
};

static void *connection_main(void *argument) {
    struct connection *connection = argument;
    serve(connection->fake, connection->fd);
    free(connection);
    return NULL;
}

/* Each connection in its own thread; the listener's thread joins them before it ends. */
static void *fake_main(void *argument) {
    struct fake *fake = argument;
    pthread_t threads[64];
    int count = 0;
    while (!fake->stop && count < 64) {
        int fd = accept(fake->listener, NULL, NULL);
        if (fd < 0) break;
        pthread_mutex_lock(&fake->lock);
        fake->fds[fake->fd_count++] = fd;
        pthread_mutex_unlock(&fake->lock);
        struct connection *connection = malloc(sizeof *connection);
        connection->fake = fake;
        connection->fd = fd;
        pthread_create(&threads[count++], NULL, connection_main, connection);
    }
    for (int index = 0; index < count; index++) pthread_join(threads[index], NULL);
    return NULL;
}

static struct fake *fake_start(const char *path, const char *certificate, const char *private_key) {
    struct fake *fake = calloc(1, sizeof *fake);
    fake->key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    size_t length = 32;
    EVP_PKEY_get_raw_public_key(fake->key, fake->public_key, &length);
    strcpy(fake->kid, "kid_fake");
    if (certificate) {
        fake->tls = SSL_CTX_new(TLS_server_method());
        SSL_CTX_use_certificate_chain_file(fake->tls, certificate);
        SSL_CTX_use_PrivateKey_file(fake->tls, private_key, SSL_FILETYPE_PEM);
        fake->listener = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        bind(fake->listener, (struct sockaddr *)&address, sizeof address);
        socklen_t size = sizeof address;
        getsockname(fake->listener, (struct sockaddr *)&address, &size);
        fake->port = ntohs(address.sin_port);
    } else {
        snprintf(fake->path, sizeof fake->path, "%s", path);
        unlink(path);
        fake->listener = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un address = {.sun_family = AF_UNIX};
        snprintf(address.sun_path, sizeof address.sun_path, "%s", path);
        bind(fake->listener, (struct sockaddr *)&address, sizeof address);
    }
    listen(fake->listener, 8);
    pthread_mutex_init(&fake->lock, NULL);
    pthread_create(&fake->thread, NULL, fake_main, fake);
    return fake;
}

static void fake_stop(struct fake *fake) {
    fake->stop = 1;
    shutdown(fake->listener, SHUT_RDWR);
    close(fake->listener);
    /* Open connections end too, so their threads (joined by the listener's) return. */
    pthread_mutex_lock(&fake->lock);
    for (int index = 0; index < fake->fd_count; index++) shutdown(fake->fds[index], SHUT_RDWR);
    pthread_mutex_unlock(&fake->lock);
    pthread_join(fake->thread, NULL);
    pthread_mutex_destroy(&fake->lock);
    if (fake->path[0]) unlink(fake->path);
    if (fake->tls) SSL_CTX_free(fake->tls);
    EVP_PKEY_free(fake->key);
    free(fake);
}

/* ---- what a client must refuse -------------------------------------------------------- */

static void refusals(void) {
    char path[] = "/tmp/lc-fake-XXXXXX";
    int made = mkstemp(path);
    close(made);
    struct fake *fake = fake_start(path, NULL, NULL);
    char endpoint[160];
    snprintf(endpoint, sizeof endpoint, "unix:%s", path);
    fake_now = time(NULL);
    lc_config config = {.endpoint = endpoint, .api_key = "lmk_test", .timeout_ms = 800, .offline_grace_seconds = 3 * 86400, .clock = fake_clock};
    lc_client *client = NULL;
    lc_error error;
    CHECK(lc_client_new(&config, &client, &error) == LC_OK, "client: %s", error.message);
    lc_client_pin_key(client, fake->kid, fake->public_key, &error);
    lc_validation answer;
    CHECK(lc_validate(client, "any", "fp", "", &answer, &error) == LC_OK && answer.valid, "genuine: %s", error.message);
    CHECK(answer.feature_count == 1 && strcmp(answer.features[0], "render") == 0, "features");
    lc_validation_clear(&answer);
    const char *expected[] = {"", "does not verify", "replay", "differ from its signed statement"};
    for (int mode = 1; mode <= 3; mode++) {
        fake->mode = mode;
        int status = lc_validate(client, "other", "fp", "", &answer, &error);
        CHECK(status == LC_UNVERIFIED && strstr(error.message, expected[mode]), "mode %d: %d %s", mode, status, error.message);
    }
    fake->mode = 4;
    CHECK(lc_validate(client, "slow", "fp", "", &answer, &error) == LC_DEADLINE_EXCEEDED, "deadline: %d %s", error.code, error.message);
    /* A key outside the pinned set. */
    fake->mode = 0;
    lc_client *stranger = NULL;
    unsigned char other[32] = {1};
    lc_client_new(&config, &stranger, &error);
    lc_client_pin_key(stranger, "kid_other", other, &error);
    CHECK(lc_validate(stranger, "any", "fp", "", &answer, &error) == LC_UNVERIFIED && strstr(error.message, "not in the public key set"), "pinned: %s", error.message);
    lc_client_free(stranger);
    /* Concurrent calls on one handle (ThreadSanitizer checks the locking). */
    pthread_t threads[4];
    void *validate_many(void *);
    for (int index = 0; index < 4; index++) pthread_create(&threads[index], NULL, validate_many, client);
    for (int index = 0; index < 4; index++) pthread_join(threads[index], NULL);
    /* The gateway gone: the last verified answer is honoured for the grace, then not. */
    fake_stop(fake);
    int status = lc_validate(client, "any", "fp", "", &answer, &error);
    CHECK(status == LC_OK && answer.valid && answer.offline_since == fake_now, "offline: %d %s", status, error.message);
    lc_validation_clear(&answer);
    fake_now += 3 * 86400 + 1;
    status = lc_validate(client, "any", "fp", "", &answer, &error);
    CHECK(status == LC_UNAVAILABLE && strstr(error.message, "offline grace ended"), "grace over: %d %s", status, error.message);
    CHECK(lc_validate(client, "never-seen", "fp", "", &answer, &error) == LC_UNAVAILABLE, "no grace without an answer");
    lc_client_free(client);
}

void *validate_many(void *argument) {
    lc_client *client = argument;
    for (int index = 0; index < 20; index++) {
        lc_validation answer;
        lc_error error;
        if (lc_validate(client, "any", "fp", "", &answer, &error) == LC_OK) lc_validation_clear(&answer);
        lc_usage_record(client, "any", "render", 1, &error);
    }
    return NULL;
}

static void tls_refusal(const char *certificates) {
    char certificate[512], private_key[512], right_ca[512], wrong_ca[512], endpoint[64];
    snprintf(certificate, sizeof certificate, "%s/real/server.pem", certificates);
    snprintf(private_key, sizeof private_key, "%s/real/server.key", certificates);
    snprintf(right_ca, sizeof right_ca, "%s/real/ca.pem", certificates);
    snprintf(wrong_ca, sizeof wrong_ca, "%s/other/ca.pem", certificates);
    struct fake *fake = fake_start(NULL, certificate, private_key);
    snprintf(endpoint, sizeof endpoint, "127.0.0.1:%d", fake->port);
    lc_error error;
    lc_validation answer;
    lc_client *client = NULL;
    lc_config config = {.endpoint = endpoint, .api_key = "lmk_test", .ca_file = right_ca, .timeout_ms = 3000};
    CHECK(lc_client_new(&config, &client, &error) == LC_OK, "tls client: %s", error.message);
    lc_client_pin_key(client, fake->kid, fake->public_key, &error);
    CHECK(lc_validate(client, "any", "", "", &answer, &error) == LC_OK && answer.valid, "tls with the right CA: %s", error.message);
    lc_validation_clear(&answer);
    lc_client_free(client);
    config.ca_file = wrong_ca;
    lc_client_new(&config, &client, &error);
    lc_client_pin_key(client, fake->kid, fake->public_key, &error);
    int status = lc_validate(client, "any", "", "", &answer, &error);
    CHECK(status == LC_UNAVAILABLE && strstr(error.message, "TLS"), "another CA: %d %s", status, error.message);
    lc_client_free(client);
    config.ca_file = NULL;
    CHECK(lc_client_new(&config, &client, &error) == LC_INVALID_ARGUMENT, "TCP without a CA");
    fake_stop(fake);
}

/* ---- the live stack ---------------------------------------------------------------------- */

/* The issuer's side through lc_call: a license for the policy and customer the harness made. */
static char *issue(const char *gateway, char *license_id, size_t id_size) {
    lc_config config = {.endpoint = gateway, .api_key = env("LM_ISSUER_KEY"), .timeout_ms = 5000};
    lc_client *issuer = NULL;
    lc_error error;
    if (lc_client_new(&config, &issuer, &error) != LC_OK) return NULL;
    Licensing__V1__IssueLicenseRequest request = LICENSING__V1__ISSUE_LICENSE_REQUEST__INIT;
    request.policy_id = (char *)env("LM_POLICY");
    request.customer_id = (char *)env("LM_CUSTOMER");
    uint8_t bytes[512];
    size_t length = licensing__v1__issue_license_request__pack(&request, bytes);
    uint8_t *response = NULL;
    size_t response_length = 0;
    char *key = NULL;
    if (lc_call(issuer, "licensing.v1.Issuance/IssueLicense", bytes, length, &response, &response_length, &error) == LC_OK) {
        Licensing__V1__IssueLicenseResponse *issued = licensing__v1__issue_license_response__unpack(NULL, response_length, response);
        if (issued && issued->license) {
            key = strdup(issued->license_key);
            snprintf(license_id, id_size, "%s", issued->license->id);
        }
        if (issued) licensing__v1__issue_license_response__free_unpacked(issued, NULL);
    } else {
        fprintf(stderr, "issue: %s\n", error.message);
    }
    free(response);
    lc_client_free(issuer);
    return key;
}

static void live(void) {
    const char *gateway = env("LM_GATEWAY");
    char license_id[64] = {0};
    char *issued_key = issue(gateway, license_id, sizeof license_id);
    CHECK(issued_key != NULL, "the issuer issues a license");
    if (!issued_key) return;
    const char *license_key = issued_key;
    unsigned char public_key[32];
    hex_key(env("LM_PUBLIC_KEY"), public_key);
    lc_config config = {.endpoint = gateway, .api_key = env("LM_PRODUCT_KEY"), .timeout_ms = 5000};
    lc_client *client = NULL;
    lc_error error;
    CHECK(lc_client_new(&config, &client, &error) == LC_OK, "client: %s", error.message);
    lc_client_pin_key(client, env("LM_KID"), public_key, &error);
    int reason = 0;
    CHECK(lc_activate(client, license_key, "c-fp-1", "Build box", &reason, &error) == LC_OK && reason == LC_REASON_VALID, "activate: %s", error.message);
    lc_validation answer;
    CHECK(lc_validate(client, license_key, "c-fp-1", "render", &answer, &error) == LC_OK && answer.valid && answer.reason == LC_REASON_VALID,
          "validate: %s", error.message);
    CHECK(strcmp(answer.license_id, license_id) == 0, "license id %s", answer.license_id);
    lc_validation_clear(&answer);
    /* A seat kept past its 3-second lease by the heartbeat thread. */
    lc_seat *seat = NULL, *second = NULL;
    CHECK(lc_seat_checkout(client, license_key, "c-proc-1", 3, &seat, &error) == LC_OK, "seat: %s", error.message);
    sleep(5);
    CHECK(seat && lc_seat_held(seat), "the seat was kept");
    CHECK(lc_seat_checkout(client, license_key, "c-proc-2", 0, &second, &error) == LC_FAILED_PRECONDITION, "a second seat: %d %s", error.code, error.message);
    if (seat) CHECK(lc_seat_checkin(seat, &error) == LC_OK, "checkin: %s", error.message);
    /* Usage in a batch. */
    for (int index = 0; index < 3; index++) lc_usage_record(client, license_key, "render", 5, &error);
    uint32_t accepted = 0;
    CHECK(lc_usage_flush(client, &accepted, &error) == LC_OK && accepted == 3, "usage: %u %s", accepted, error.message);
    /* The offline file the harness made for its own license and c-fp-offline. */
    FILE *file = fopen(env("LM_OFFLINE_FILE"), "r");
    char text[8192] = {0};
    size_t read_bytes = file ? fread(text, 1, sizeof text - 1, file) : 0;
    if (file) fclose(file);
    text[read_bytes] = 0;
    int64_t last_seen = 0;
    CHECK(lc_verify_offline_file(client, text, "c-fp-offline", 0, &last_seen, &error) == LC_OK && last_seen > 0, "offline file: %s", error.message);
    CHECK(lc_verify_offline_file(client, text, "another-machine", 0, &last_seen, &error) == LC_UNVERIFIED && strstr(error.message, "another machine"), "fingerprint");
    CHECK(lc_verify_offline_file(client, text, "c-fp-offline", time(NULL) + 86400, &last_seen, &error) == LC_UNVERIFIED && strstr(error.message, "set back"),
          "clock rollback: %s", error.message);
    text[200] ^= 1;
    CHECK(lc_verify_offline_file(client, text, "c-fp-offline", 0, &last_seen, &error) == LC_UNVERIFIED, "an altered file");
    /* Revoked through the issuer's key (any method: lc_call); a verified answer then says so. */
    lc_config issuer_config = {.endpoint = gateway, .api_key = env("LM_ISSUER_KEY"), .timeout_ms = 5000};
    lc_client *issuer = NULL;
    lc_client_new(&issuer_config, &issuer, &error);
    Licensing__V1__LicenseTransitionRequest revoke = LICENSING__V1__LICENSE_TRANSITION_REQUEST__INIT;
    revoke.id = license_id;
    revoke.reason = "refund";
    uint8_t request[256];
    size_t request_length = licensing__v1__license_transition_request__pack(&revoke, request);
    uint8_t *response = NULL;
    size_t response_length = 0;
    CHECK(lc_call(issuer, "licensing.v1.Issuance/RevokeLicense", request, request_length, &response, &response_length, &error) == LC_OK, "revoke: %s", error.message);
    free(response);
    int revoked = 0;
    for (int attempt = 0; attempt < 100 && !revoked; attempt++) {
        if (lc_validate(client, license_key, "c-fp-1", "render", &answer, &error) == LC_OK) {
            revoked = answer.reason == LC_REASON_REVOKED && !answer.valid;
            lc_validation_clear(&answer);
        }
        if (!revoked) usleep(100000);
    }
    CHECK(revoked, "the verified answer says revoked");
    CHECK(lc_call(issuer, "licensing.v1.Issuance/RevokeLicense", (const uint8_t *)"\x0a\x03lic", 5, &response, &response_length, &error) == LC_NOT_FOUND,
          "errors are codes with messages: %d %s", error.code, error.message);
    lc_client_free(issuer);
    lc_client_free(client);
    free(issued_key);
}

int main(void) {
    /* The stand-in server's TLS writes to clients that left; the client library itself
     * never raises SIGPIPE (tested by not ignoring it for the library's calls). */
    refusals();
    if (getenv("LM_CERTS")) tls_refusal(getenv("LM_CERTS"));
    if (getenv("LM_GATEWAY")) live();
    printf("%s: %d failures\n", failures ? "FAILED" : "passed", failures);
    return failures ? 1 : 0;
}

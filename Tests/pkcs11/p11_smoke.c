// Smoke test of Sources/CPKCS11 against a real PKCS#11 module (SoftHSM2 by run-smoke).
// Usage: p11_smoke MODULE TOKEN_LABEL PIN TOKEN_DIR
// TOKEN_DIR is emptied near the end to see how the module behaves when its token vanishes.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit-1/p11-kit/pkcs11.h>

#include "CPKCS11.h"

static int failures;

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        int ok_ = (cond);                                                                     \
        failures += !ok_;                                                                     \
        printf("%s ", ok_ ? "PASS" : "FAIL");                                                 \
        printf(__VA_ARGS__);                                                                  \
        printf("\n");                                                                         \
    } while (0)
#define INFO(...) (printf("INFO "), printf(__VA_ARGS__), printf("\n"))
#define NAME(rv) lm_p11_error_name(rv)

static int verify(const unsigned char pub[32], const void *msg, size_t len, const unsigned char sig[64]) {
    EVP_PKEY *key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, 32);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = key && ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, key) == 1 &&
             EVP_DigestVerify(ctx, sig, 64, msg, len) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(key);
    return ok;
}

static void hex(char *out, const unsigned char *b, size_t n) {
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
}

struct worker {
    lm_p11_session *s;
    const char *label;
    const unsigned char *pub;
    int id, bad;
};

enum { THREADS = 4, SIGNS = 50 };

static void *sign_many(void *arg) {
    struct worker *w = arg;
    for (int i = 0; i < SIGNS; i++) {
        char msg[64];
        unsigned char sig[64];
        int n = snprintf(msg, sizeof msg, "thread %d message %d", w->id, i);
        if (lm_p11_sign_ed25519(w->s, w->label, (const unsigned char *)msg, (size_t)n, sig) != LM_P11_OK ||
            !verify(w->pub, msg, (size_t)n, sig))
            w->bad++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODULE TOKEN_LABEL PIN TOKEN_DIR\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); // PASS lines survive a crash or a sanitizer's exit
    const char *module = argv[1], *token = argv[2], *pin = argv[3], *tokendir = argv[4];
    char msg[256];
    lm_p11_session *s = NULL, *s2 = NULL;
    unsigned long rv;

    rv = lm_p11_open(module, token, pin, &s, msg, sizeof msg);
    CHECK(rv == LM_P11_OK && s != NULL, "open token '%s': %s %s", token, NAME(rv), msg);
    if (s == NULL) return 1;

    // Generate under a temporary label, derive the final label from the public key, relabel.
    char tmp[64], kid[17];
    unsigned char pub[32], pub2[32];
    snprintf(tmp, sizeof tmp, "tmp-%ld", (long)getpid());
    rv = lm_p11_generate_ed25519(s, tmp, pub);
    CHECK(rv == LM_P11_OK, "generate Ed25519 under '%s': %s", tmp, NAME(rv));
    hex(kid, pub, 8);
    rv = lm_p11_generate_ed25519(s, tmp, pub2);
    CHECK(rv == LM_P11_LABEL_EXISTS, "generate again under '%s' is refused: %s", tmp, NAME(rv));
    rv = lm_p11_relabel(s, tmp, kid);
    CHECK(rv == LM_P11_OK, "relabel '%s' -> '%s': %s", tmp, kid, NAME(rv));
    rv = lm_p11_public_key(s, kid, pub2);
    CHECK(rv == LM_P11_OK && memcmp(pub, pub2, 32) == 0, "public key by new label matches: %s", NAME(rv));
    rv = lm_p11_public_key(s, tmp, pub2);
    CHECK(rv == LM_P11_KEY_NOT_FOUND, "public key by old label is gone: %s", NAME(rv));
    rv = lm_p11_relabel(s, "no-such-key", "x");
    CHECK(rv == LM_P11_KEY_NOT_FOUND, "relabel of a missing key: %s", NAME(rv));

    // Sign and verify with OpenSSL; a changed message must not verify.
    const char *text = "license 42: valid until 2030-01-01";
    unsigned char sig[64];
    rv = lm_p11_sign_ed25519(s, kid, (const unsigned char *)text, strlen(text), sig);
    CHECK(rv == LM_P11_OK, "sign with '%s': %s", kid, NAME(rv));
    CHECK(verify(pub, text, strlen(text), sig), "OpenSSL verifies the signature");
    CHECK(!verify(pub, "license 43", 10, sig), "OpenSSL rejects it for another message");
    rv = lm_p11_sign_ed25519(s, kid, NULL, 0, sig);
    CHECK(rv == LM_P11_OK && verify(pub, "", 0, sig), "sign the empty message: %s", NAME(rv));
    rv = lm_p11_sign_ed25519(s, tmp, (const unsigned char *)text, strlen(text), sig);
    CHECK(rv == LM_P11_KEY_NOT_FOUND, "sign with the old label: %s", NAME(rv));

    int extractable = -1, sensitive = -1;
    rv = lm_p11_is_extractable(s, kid, &extractable, &sensitive);
    CHECK(rv == LM_P11_OK && extractable == 0 && sensitive == 1,
          "private key is not extractable (%d) and sensitive (%d): %s", extractable, sensitive, NAME(rv));

    // AES-256-GCM under a secret key that stays in the token (it wraps the master key).
    rv = lm_p11_generate_aes256(s, "wrap-1");
    CHECK(rv == LM_P11_OK, "generate AES key 'wrap-1': %s", NAME(rv));
    rv = lm_p11_generate_aes256(s, "wrap-1");
    CHECK(rv == LM_P11_LABEL_EXISTS, "a second 'wrap-1' is refused: %s", NAME(rv));
    {
        const unsigned char iv[LM_P11_GCM_IV_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
        const unsigned char secret[32] = "thirty-two bytes of master key!";
        const unsigned char aad[] = "license-manager master key";
        unsigned char sealed[32 + LM_P11_GCM_TAG_LEN], opened[32];
        rv = lm_p11_aes_gcm_encrypt(s, "wrap-1", iv, aad, sizeof aad, secret, 32, sealed);
        CHECK(rv == LM_P11_OK && memcmp(sealed, secret, 32) != 0, "encrypt under 'wrap-1': %s", NAME(rv));
        rv = lm_p11_aes_gcm_decrypt(s, "wrap-1", iv, aad, sizeof aad, sealed, sizeof sealed, opened);
        CHECK(rv == LM_P11_OK && memcmp(opened, secret, 32) == 0, "decrypt gives it back: %s", NAME(rv));
        sealed[3] ^= 1;
        rv = lm_p11_aes_gcm_decrypt(s, "wrap-1", iv, aad, sizeof aad, sealed, sizeof sealed, opened);
        CHECK(rv != LM_P11_OK && opened[0] == 0, "an altered ciphertext does not decrypt: %s", NAME(rv));
        sealed[3] ^= 1;
        rv = lm_p11_aes_gcm_decrypt(s, "wrap-1", iv, aad, sizeof aad - 1, sealed, sizeof sealed, opened);
        CHECK(rv != LM_P11_OK, "other associated data does not decrypt: %s", NAME(rv));
        rv = lm_p11_aes_gcm_decrypt(s, "wrap-1", iv, aad, sizeof aad, sealed, sizeof sealed, opened);
        CHECK(rv == LM_P11_OK, "the session still works after refusals: %s", NAME(rv));
        rv = lm_p11_aes_gcm_decrypt(s, "no-such-key", iv, aad, sizeof aad, sealed, sizeof sealed, opened);
        CHECK(rv == LM_P11_KEY_NOT_FOUND, "no key, no decryption: %s", NAME(rv));
    }

    // Two handles on the same module and token (no second C_Initialize), each shared by two
    // threads: calls on one handle are serialised inside, the two handles run in parallel.
    rv = lm_p11_open(module, token, pin, &s2, msg, sizeof msg);
    CHECK(rv == LM_P11_OK, "second handle on the same token: %s %s", NAME(rv), msg);
    if (s2 == NULL) return 1;
    pthread_t threads[THREADS];
    struct worker workers[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (struct worker){.s = i % 2 ? s2 : s, .label = kid, .pub = pub, .id = i};
        pthread_create(&threads[i], NULL, sign_many, &workers[i]);
    }
    int bad = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        bad += workers[i].bad;
    }
    CHECK(bad == 0, "%d threads x %d signatures on two handles, %d bad", THREADS, SIGNS, bad);

    // Closing the second handle must neither finalise the module nor log the first one out.
    lm_p11_session *s3 = NULL;
    rv = lm_p11_open(module, token, "0000", &s3, msg, sizeof msg);
    INFO("wrong PIN while the token is logged in elsewhere in the process: %s%s", NAME(rv),
         rv == LM_P11_OK ? " (C_Login says already logged in without checking the PIN)" : "");
    lm_p11_close(s3);
    lm_p11_close(s2);
    rv = lm_p11_sign_ed25519(s, kid, (const unsigned char *)"one", 3, sig);
    CHECK(rv == LM_P11_OK && verify(pub, "one", 3, sig), "first handle still signs after the second closed: %s",
          NAME(rv));

    // Retirement: both objects go; the key can no longer sign.
    rv = lm_p11_destroy(s, kid);
    CHECK(rv == LM_P11_OK, "destroy '%s': %s", kid, NAME(rv));
    rv = lm_p11_sign_ed25519(s, kid, (const unsigned char *)text, strlen(text), sig);
    CHECK(rv == LM_P11_KEY_NOT_FOUND, "sign after destroy fails: %s", NAME(rv));
    rv = lm_p11_public_key(s, kid, pub2);
    CHECK(rv == LM_P11_KEY_NOT_FOUND, "public key after destroy: %s", NAME(rv));
    rv = lm_p11_destroy(s, kid);
    CHECK(rv == LM_P11_KEY_NOT_FOUND, "destroy again: %s", NAME(rv));
    lm_p11_close(s);
    s = NULL;

    // Errors an operator sees. Wrong PIN with no other login in the process.
    rv = lm_p11_open(module, token, "0000", &s, msg, sizeof msg);
    CHECK(rv == CKR_PIN_INCORRECT && s == NULL, "wrong PIN: %s \"%s\"", NAME(rv), msg);
    rv = lm_p11_open("/nonexistent/libpkcs11.so", token, pin, &s, msg, sizeof msg);
    CHECK(rv == LM_P11_MODULE_LOAD_FAILED && strstr(msg, "/nonexistent/libpkcs11.so"), "missing module: %s \"%s\"",
          NAME(rv), msg);
    rv = lm_p11_open("/lib/x86_64-linux-gnu/libc.so.6", token, pin, &s, msg, sizeof msg);
    CHECK(rv == LM_P11_MODULE_LOAD_FAILED, "not a module: %s \"%s\"", NAME(rv), msg);
    rv = lm_p11_open(module, "no-such-token", pin, &s, msg, sizeof msg);
    CHECK(rv == LM_P11_TOKEN_NOT_FOUND, "unknown token: %s \"%s\"", NAME(rv), msg);
    rv = lm_p11_open(module, "a-label-that-is-longer-than-32-bytes", pin, &s, msg, sizeof msg);
    CHECK(rv == CKR_ARGUMENTS_BAD, "over-long token label: %s \"%s\"", NAME(rv), msg);
    CHECK(strcmp(NAME(0x80000123UL), "CKR_VENDOR_DEFINED") == 0 && strcmp(NAME(0x1234), "CKR_UNKNOWN") == 0,
          "names of unknown codes");

    // The module was finalised and unloaded by the last close; loading it again must work
    // (C_Initialize a second time in one process).
    rv = lm_p11_open(module, token, pin, &s, msg, sizeof msg);
    CHECK(rv == LM_P11_OK, "open again after the module was finalised: %s %s", NAME(rv), msg);
    lm_p11_close(s);
    s = NULL;

    // A module another component initialised: used as is, and not finalised by our close.
    void *dl = dlopen(module, RTLD_NOW | RTLD_LOCAL);
    CK_C_GetFunctionList get = dl ? (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList") : NULL;
    CK_FUNCTION_LIST_PTR f = NULL;
    if (get) get(&f);
    CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
    rv = f ? f->C_Initialize(&args) : CKR_GENERAL_ERROR;
    CHECK(rv == 0, "the test initialises the module itself: %s", NAME(rv));
    rv = lm_p11_open(module, token, pin, &s, msg, sizeof msg);
    CHECK(rv == LM_P11_OK, "open on a module initialised elsewhere: %s %s", NAME(rv), msg);
    if (s == NULL) return 1;

    // Sessions killed behind the handle's back (as a token reset would): the call fails
    // with a code that asks for a reopen, and after lm_p11_reopen the key signs again.
    rv = lm_p11_generate_ed25519(s, "survivor", pub);
    CHECK(rv == LM_P11_OK, "generate 'survivor': %s", NAME(rv));
    CK_SLOT_ID slots[16];
    CK_ULONG nslots = 16;
    if (f->C_GetSlotList(CK_TRUE, slots, &nslots) != CKR_OK) nslots = 0;
    for (CK_ULONG i = 0; i < nslots; i++) f->C_CloseAllSessions(slots[i]);
    rv = lm_p11_sign_ed25519(s, "survivor", (const unsigned char *)"d", 1, sig);
    CHECK(rv != LM_P11_OK && lm_p11_needs_reopen(rv), "sign after all sessions closed: %s", NAME(rv));
    rv = lm_p11_reopen(s);
    CHECK(rv == LM_P11_OK, "reopen: %s", NAME(rv));
    rv = lm_p11_sign_ed25519(s, "survivor", (const unsigned char *)"d", 1, sig);
    CHECK(rv == LM_P11_OK && verify(pub, "d", 1, sig), "sign after reopen: %s", NAME(rv));
    rv = lm_p11_destroy(s, "survivor");
    CHECK(rv == LM_P11_OK, "destroy 'survivor': %s", NAME(rv));
    lm_p11_close(s);
    s = NULL;
    CK_INFO info;
    rv = f ? f->C_GetInfo(&info) : CKR_GENERAL_ERROR;
    CHECK(rv == 0, "our close left it initialised: C_GetInfo %s", NAME(rv));
    if (f) f->C_Finalize(NULL);
    if (dl) dlclose(dl);

    // The token disappears under an open session (SoftHSM: its directory is emptied).
    rv = lm_p11_open(module, token, pin, &s, msg, sizeof msg);
    CHECK(rv == LM_P11_OK, "open for the removal test: %s %s", NAME(rv), msg);
    if (s == NULL) return 1;
    rv = lm_p11_generate_ed25519(s, "doomed", pub);
    CHECK(rv == LM_P11_OK, "generate 'doomed': %s", NAME(rv));
    rv = lm_p11_sign_ed25519(s, "doomed", (const unsigned char *)"a", 1, sig);
    CHECK(rv == LM_P11_OK, "sign before removal (handle now cached): %s", NAME(rv));
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'/*", tokendir);
    CHECK(system(cmd) == 0, "emptied %s", tokendir);
    rv = lm_p11_sign_ed25519(s, "doomed", (const unsigned char *)"b", 1, sig);
    CHECK(rv != LM_P11_OK && lm_p11_needs_reopen(rv), "sign after the token vanished asks for a reopen: %s", NAME(rv));
    rv = lm_p11_public_key(s, "doomed", pub2);
    CHECK(rv != LM_P11_OK && lm_p11_needs_reopen(rv), "so does reading the public key: %s", NAME(rv));
    rv = lm_p11_reopen(s);
    CHECK(rv == LM_P11_TOKEN_NOT_FOUND, "reopen finds no token: %s", NAME(rv));
    rv = lm_p11_sign_ed25519(s, "doomed", (const unsigned char *)"c", 1, sig);
    CHECK(rv != LM_P11_OK && lm_p11_needs_reopen(rv), "sign after the failed reopen: %s", NAME(rv));

    // The token comes back (re-created by another process, same label, same PIN): the sole
    // handle's reopen re-initialises the module, which is how SoftHSM finds new tokens.
    snprintf(cmd, sizeof cmd,
             "softhsm2-util --init-token --free --label '%s' --so-pin 1234 --pin '%s' >/dev/null", token, pin);
    CHECK(system(cmd) == 0, "token '%s' re-created", token);
    rv = lm_p11_reopen(s);
    CHECK(rv == LM_P11_OK, "reopen finds the new token: %s", NAME(rv));
    rv = lm_p11_sign_ed25519(s, "doomed", (const unsigned char *)"e", 1, sig);
    CHECK(rv == LM_P11_KEY_NOT_FOUND, "the old key is not on the new token: %s", NAME(rv));
    rv = lm_p11_generate_ed25519(s, "reborn", pub);
    CHECK(rv == LM_P11_OK, "generate on the new token: %s", NAME(rv));
    rv = lm_p11_sign_ed25519(s, "reborn", (const unsigned char *)"f", 1, sig);
    CHECK(rv == LM_P11_OK && verify(pub, "f", 1, sig), "sign on the new token: %s", NAME(rv));
    lm_p11_close(s);

    printf("%s: %d failure%s\n", failures ? "FAIL" : "PASS", failures, failures == 1 ? "" : "s");
    return failures ? 1 : 0;
}

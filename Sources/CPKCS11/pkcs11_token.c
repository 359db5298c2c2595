#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE 1 // explicit_bzero, strnlen
#endif
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// p11-kit's header, found under /usr/include without an extra search path. It is only
// included here: the public header speaks plain C so Swift needs no PKCS#11 module map.
#include <p11-kit-1/p11-kit/pkcs11.h>

#include "CPKCS11.h"

_Static_assert(sizeof(CK_ULONG) >= sizeof(size_t), "message lengths must fit a CK_ULONG");
_Static_assert(sizeof(CK_RV) == sizeof(unsigned long), "CKR codes are returned as unsigned long");

enum { CACHE_SLOTS = 8, FIND_BATCH = 16, DESTROY_ROUNDS = 64, EC_POINT_MAX = 64, SLOTS_MAX = 1024 };

// One per loaded module. dlopen returns the same handle for the same loaded object, so
// keying by it (not by path) also unifies symlinks and relative paths. C_Initialize and
// C_Finalize are process-wide: the entry initialises once and the last user finalises.
struct lm_p11_module {
    struct lm_p11_module *next;
    void *dl; // the entry's own dlopen reference
    CK_FUNCTION_LIST_PTR f;
    unsigned users;
    int owner;    // this library initialised it (another component may have, and keeps it)
    int finalize; // initialised by this library and not yet finalised
};

static pthread_mutex_t modules_lock = PTHREAD_MUTEX_INITIALIZER;
static struct lm_p11_module *modules;

struct lm_p11_session {
    pthread_mutex_t lock;
    struct lm_p11_module *mod;
    CK_FUNCTION_LIST_PTR f;
    CK_SESSION_HANDLE h; // CK_INVALID_HANDLE after a failed reopen
    size_t token_len;
    char token[32];
    int has_pin;
    size_t pin_len;
    char pin[LM_P11_PIN_MAX]; // for lm_p11_reopen; wiped on close
    // Private key handles by label. Trusted only while the object still carries the label:
    // some modules reuse handle numbers, and other processes may relabel or destroy keys.
    struct {
        CK_OBJECT_HANDLE key;
        size_t len;
        char label[LM_P11_LABEL_MAX];
    } cache[CACHE_SLOTS];
    unsigned cache_next;
};

__attribute__((format(printf, 3, 4))) static void say(char *msg, size_t cap, const char *fmt, ...) {
    if (msg == NULL || cap == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, cap, fmt, ap);
    va_end(ap);
}

static int label_ok(const char *label, size_t *len) {
    if (label == NULL) return 0;
    *len = strnlen(label, LM_P11_LABEL_MAX + 1);
    return *len > 0 && *len <= LM_P11_LABEL_MAX;
}

// --- Modules ---------------------------------------------------------------------------

static CK_RV module_acquire(const char *path, struct lm_p11_module **out, char *msg, size_t cap) {
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        const char *why = dlerror();
        say(msg, cap, "cannot load the PKCS#11 module %s: %s", path, why ? why : "unknown error");
        return LM_P11_MODULE_LOAD_FAILED;
    }
    pthread_mutex_lock(&modules_lock);
    for (struct lm_p11_module *m = modules; m != NULL; m = m->next) {
        if (m->dl == dl) {
            m->users++;
            pthread_mutex_unlock(&modules_lock);
            dlclose(dl); // the entry keeps the module loaded
            *out = m;
            return CKR_OK;
        }
    }
    CK_RV rv;
    struct lm_p11_module *m = calloc(1, sizeof *m);
    CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
    if (m == NULL) {
        rv = CKR_HOST_MEMORY;
        say(msg, cap, "out of memory");
    } else if (get == NULL) {
        rv = LM_P11_MODULE_LOAD_FAILED;
        say(msg, cap, "%s is not a PKCS#11 module (no C_GetFunctionList)", path);
    } else if ((rv = get(&m->f)) != CKR_OK || m->f == NULL) {
        rv = rv != CKR_OK ? rv : CKR_GENERAL_ERROR;
        say(msg, cap, "the PKCS#11 module %s gave no function list (%s)", path, lm_p11_error_name(rv));
    } else {
        CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
        rv = m->f->C_Initialize(&args);
        if (rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
            m->owner = m->finalize = rv == CKR_OK;
            m->dl = dl;
            m->users = 1;
            m->next = modules;
            modules = m;
            pthread_mutex_unlock(&modules_lock);
            *out = m;
            return CKR_OK;
        }
        say(msg, cap, "the PKCS#11 module %s failed to initialise (%s)", path, lm_p11_error_name(rv));
    }
    pthread_mutex_unlock(&modules_lock);
    free(m);
    dlclose(dl);
    return rv;
}

static void module_release(struct lm_p11_module *m) {
    pthread_mutex_lock(&modules_lock);
    if (--m->users == 0) {
        for (struct lm_p11_module **p = &modules; *p != NULL; p = &(*p)->next) {
            if (*p == m) {
                *p = m->next;
                break;
            }
        }
        if (m->finalize) m->f->C_Finalize(NULL);
        dlclose(m->dl);
        free(m);
    }
    pthread_mutex_unlock(&modules_lock);
}

// Modules may fix their slot list at C_Initialize (SoftHSM does), so a token that went
// away and came back stays invisible until the module is initialised again. That is only
// safe for the module's sole user, and only if this library owns the initialisation.
static CK_RV module_restart(struct lm_p11_module *m) {
    CK_RV rv = CKR_OK;
    pthread_mutex_lock(&modules_lock);
    if (m->users != 1 || !m->owner) {
        rv = CKR_FUNCTION_NOT_SUPPORTED;
    } else {
        if (m->finalize) m->f->C_Finalize(NULL);
        CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
        rv = m->f->C_Initialize(&args);
        if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) { // another component got there first
            m->owner = 0;
            rv = CKR_OK;
        }
        m->finalize = rv == CKR_OK && m->owner;
    }
    pthread_mutex_unlock(&modules_lock);
    return rv;
}

// --- Sessions --------------------------------------------------------------------------

// Token labels are 32 bytes padded with blanks (some modules pad with NULs).
static int token_matches(const CK_UTF8CHAR field[32], const char *want, size_t len) {
    size_t n = 32;
    while (n > 0 && (field[n - 1] == ' ' || field[n - 1] == '\0')) n--;
    return n == len && memcmp(field, want, n) == 0;
}

static CK_RV find_slot(lm_p11_session *s, CK_SLOT_ID *slot, char *msg, size_t cap) {
    CK_SLOT_ID *ids = NULL;
    CK_ULONG n = 0;
    CK_RV rv;
    // The slot count may grow between the two calls; retry a few times, then give up.
    for (int tries = 0;; tries++) {
        if ((rv = s->f->C_GetSlotList(CK_TRUE, NULL, &n)) != CKR_OK || n == 0) break;
        if (n > SLOTS_MAX) {
            rv = CKR_GENERAL_ERROR; // a module that claims this many slots is not to be trusted
            break;
        }
        CK_SLOT_ID *more = realloc(ids, n * sizeof *ids);
        if (more == NULL) {
            rv = CKR_HOST_MEMORY;
            break;
        }
        ids = more;
        if ((rv = s->f->C_GetSlotList(CK_TRUE, ids, &n)) != CKR_BUFFER_TOO_SMALL || tries == 3) break;
    }
    if (rv != CKR_OK) {
        say(msg, cap, "cannot list the PKCS#11 module's slots (%s)", lm_p11_error_name(rv));
        free(ids);
        return rv;
    }
    CK_ULONG found = 0;
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO info;
        // A token removed since the listing is simply not a match.
        if (s->f->C_GetTokenInfo(ids[i], &info) != CKR_OK) continue;
        if (token_matches(info.label, s->token, s->token_len) && found++ == 0) *slot = ids[i];
    }
    free(ids);
    if (found == 1) return CKR_OK;
    if (found == 0) {
        say(msg, cap, "no token labelled '%.*s' in the PKCS#11 module", (int)s->token_len, s->token);
        return LM_P11_TOKEN_NOT_FOUND;
    }
    say(msg, cap, "%lu tokens labelled '%.*s' in the PKCS#11 module: refusing to guess", found,
        (int)s->token_len, s->token);
    return LM_P11_TOKEN_AMBIGUOUS;
}

static CK_RV session_start(lm_p11_session *s, char *msg, size_t cap) {
    if (s->h != CK_INVALID_HANDLE) s->f->C_CloseSession(s->h); // may already be gone
    s->h = CK_INVALID_HANDLE;
    memset(s->cache, 0, sizeof s->cache);

    CK_SLOT_ID slot;
    CK_RV rv = find_slot(s, &slot, msg, cap);
    if (rv != CKR_OK) return rv;
    rv = s->f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s->h);
    if (rv != CKR_OK) {
        s->h = CK_INVALID_HANDLE;
        say(msg, cap, "cannot open a session on token '%.*s' (%s)", (int)s->token_len, s->token, lm_p11_error_name(rv));
        return rv;
    }
    rv = s->f->C_Login(s->h, CKU_USER, s->has_pin ? (CK_UTF8CHAR_PTR)s->pin : NULL,
                       s->has_pin ? s->pin_len : 0);
    if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) return CKR_OK;
    if (rv == CKR_PIN_INCORRECT)
        say(msg, cap, "the token refused the PIN (CKR_PIN_INCORRECT)");
    else if (rv == CKR_PIN_LOCKED)
        say(msg, cap, "the token's user PIN is locked (CKR_PIN_LOCKED)");
    else
        say(msg, cap, "cannot log in to token '%.*s' (%s)", (int)s->token_len, s->token, lm_p11_error_name(rv));
    s->f->C_CloseSession(s->h);
    s->h = CK_INVALID_HANDLE;
    return rv;
}

unsigned long lm_p11_open(const char *module_path, const char *token_label, const char *pin,
                          lm_p11_session **out, char *message, size_t message_len) {
    say(message, message_len, "%s", "");
    if (out == NULL || module_path == NULL || token_label == NULL) {
        say(message, message_len, "lm_p11_open: missing argument");
        return CKR_ARGUMENTS_BAD;
    }
    *out = NULL;
    size_t token_len = strnlen(token_label, 33), pin_len = pin ? strnlen(pin, LM_P11_PIN_MAX + 1) : 0;
    if (token_len == 0 || token_len > 32) {
        say(message, message_len, "a token label has 1 to 32 bytes: '%.40s' is not one", token_label);
        return CKR_ARGUMENTS_BAD;
    }
    if (pin_len > LM_P11_PIN_MAX) {
        say(message, message_len, "the PIN is longer than %d bytes", LM_P11_PIN_MAX);
        return CKR_PIN_LEN_RANGE;
    }
    lm_p11_session *s = calloc(1, sizeof *s);
    if (s == NULL || pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s);
        say(message, message_len, "out of memory");
        return CKR_HOST_MEMORY;
    }
    s->h = CK_INVALID_HANDLE;
    memcpy(s->token, token_label, token_len);
    s->token_len = token_len;
    s->has_pin = pin != NULL;
    if (pin) memcpy(s->pin, pin, pin_len);
    s->pin_len = pin_len;

    CK_RV rv = module_acquire(module_path, &s->mod, message, message_len);
    if (rv == CKR_OK) {
        s->f = s->mod->f;
        rv = session_start(s, message, message_len);
        if (rv == CKR_OK) {
            *out = s;
            return CKR_OK;
        }
        module_release(s->mod);
    }
    pthread_mutex_destroy(&s->lock);
    explicit_bzero(s->pin, sizeof s->pin);
    free(s);
    return rv;
}

void lm_p11_close(lm_p11_session *s) {
    if (s == NULL) return;
    if (s->h != CK_INVALID_HANDLE) s->f->C_CloseSession(s->h);
    module_release(s->mod);
    pthread_mutex_destroy(&s->lock);
    explicit_bzero(s->pin, sizeof s->pin);
    free(s);
}

unsigned long lm_p11_reopen(lm_p11_session *s) {
    if (s == NULL) return CKR_ARGUMENTS_BAD;
    pthread_mutex_lock(&s->lock);
    CK_RV rv = session_start(s, NULL, 0);
    // session_start has closed the old session, so a restart ends none of ours.
    if ((rv == LM_P11_TOKEN_NOT_FOUND || rv == CKR_CRYPTOKI_NOT_INITIALIZED) && module_restart(s->mod) == CKR_OK)
        rv = session_start(s, NULL, 0);
    pthread_mutex_unlock(&s->lock);
    return rv;
}

// --- Objects (callers hold s->lock) ----------------------------------------------------

static CK_RV find(lm_p11_session *s, CK_OBJECT_CLASS cls, const char *label, size_t len,
                  CK_OBJECT_HANDLE *out, CK_ULONG cap, CK_ULONG *n) {
    if (s->h == CK_INVALID_HANDLE) return CKR_SESSION_HANDLE_INVALID;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_LABEL, (void *)label, len}};
    *n = 0;
    CK_RV rv = s->f->C_FindObjectsInit(s->h, t, 2);
    if (rv != CKR_OK) return rv;
    rv = s->f->C_FindObjects(s->h, out, cap, n);
    CK_RV end = s->f->C_FindObjectsFinal(s->h);
    return rv != CKR_OK ? rv : end;
}

// Why a search found nothing. Private objects are invisible to a session without a login
// (another component's C_Logout, a token reset), and a vanished or replaced token can leave
// the session looking healthy (SoftHSM keeps it logged in and answers "no objects"): say
// so, so that the caller reopens, rather than claim the key is gone.
static CK_RV absent(lm_p11_session *s) {
    CK_SESSION_INFO si;
    CK_TOKEN_INFO ti;
    CK_RV rv = s->f->C_GetSessionInfo(s->h, &si);
    if (rv != CKR_OK) return rv;
    if (si.state == CKS_RO_PUBLIC_SESSION || si.state == CKS_RW_PUBLIC_SESSION) return CKR_USER_NOT_LOGGED_IN;
    rv = s->f->C_GetTokenInfo(si.slotID, &ti);
    if (rv != CKR_OK) return lm_p11_needs_reopen(rv) ? rv : CKR_TOKEN_NOT_PRESENT;
    if (!token_matches(ti.label, s->token, s->token_len)) return CKR_TOKEN_NOT_PRESENT;
    return LM_P11_KEY_NOT_FOUND;
}

static CK_RV find_one(lm_p11_session *s, CK_OBJECT_CLASS cls, const char *label, size_t len,
                      CK_OBJECT_HANDLE *out) {
    CK_OBJECT_HANDLE found[2];
    CK_ULONG n;
    CK_RV rv = find(s, cls, label, len, found, 2, &n);
    if (rv != CKR_OK) return rv;
    if (n > 1) return LM_P11_KEY_AMBIGUOUS;
    if (n == 0) return absent(s);
    *out = found[0];
    return CKR_OK;
}

static CK_RV label_free(lm_p11_session *s, const char *label, size_t len) {
    static const CK_OBJECT_CLASS classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
    for (size_t i = 0; i < 2; i++) {
        CK_OBJECT_HANDLE h;
        CK_ULONG n;
        CK_RV rv = find(s, classes[i], label, len, &h, 1, &n);
        if (rv != CKR_OK) return rv;
        if (n != 0) return LM_P11_LABEL_EXISTS;
    }
    return CKR_OK;
}

static CK_RV private_key(lm_p11_session *s, const char *label, size_t len, CK_OBJECT_HANDLE *key) {
    for (unsigned i = 0; i < CACHE_SLOTS; i++) {
        if (s->cache[i].key == CK_INVALID_HANDLE || s->cache[i].len != len ||
            memcmp(s->cache[i].label, label, len) != 0)
            continue;
        char now[LM_P11_LABEL_MAX];
        CK_ATTRIBUTE a = {CKA_LABEL, now, sizeof now};
        if (s->f->C_GetAttributeValue(s->h, s->cache[i].key, &a, 1) == CKR_OK && a.ulValueLen == len &&
            memcmp(now, label, len) == 0) {
            *key = s->cache[i].key;
            return CKR_OK;
        }
        s->cache[i].key = CK_INVALID_HANDLE;
        break;
    }
    CK_RV rv = find_one(s, CKO_PRIVATE_KEY, label, len, key);
    if (rv == CKR_OK) {
        unsigned i = s->cache_next++ % CACHE_SLOTS;
        s->cache[i].key = *key;
        s->cache[i].len = len;
        memcpy(s->cache[i].label, label, len);
    }
    return rv;
}

// CKA_EC_POINT is a DER OCTET STRING (PKCS#11 3.0, SoftHSM); some modules give raw bytes.
static CK_RV read_public(lm_p11_session *s, CK_OBJECT_HANDLE h, unsigned char out[32]) {
    CK_BYTE point[EC_POINT_MAX];
    CK_ATTRIBUTE a = {CKA_EC_POINT, point, sizeof point};
    CK_RV rv = s->f->C_GetAttributeValue(s->h, h, &a, 1);
    if (rv == CKR_BUFFER_TOO_SMALL) return LM_P11_BAD_PUBLIC_KEY;
    if (rv != CKR_OK) return rv;
    if (a.ulValueLen == 34 && point[0] == 0x04 && point[1] == 0x20)
        memcpy(out, point + 2, 32);
    else if (a.ulValueLen == 32)
        memcpy(out, point, 32);
    else
        return LM_P11_BAD_PUBLIC_KEY;
    return CKR_OK;
}

static CK_RV generate(lm_p11_session *s, const char *label, size_t len, const CK_BYTE *params,
                      CK_ULONG params_len, CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv) {
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_KEY_TYPE type = CKK_EC_EDWARDS;
    CK_MECHANISM m = {CKM_EC_EDWARDS_KEY_PAIR_GEN, NULL, 0};
    CK_ATTRIBUTE pt[] = {
        {CKA_TOKEN, &yes, sizeof yes},        {CKA_PRIVATE, &no, sizeof no},
        {CKA_KEY_TYPE, &type, sizeof type},   {CKA_EC_PARAMS, (void *)params, params_len},
        {CKA_LABEL, (void *)label, len},      {CKA_VERIFY, &yes, sizeof yes},
    };
    CK_ATTRIBUTE kt[] = {
        {CKA_TOKEN, &yes, sizeof yes},        {CKA_PRIVATE, &yes, sizeof yes},
        {CKA_KEY_TYPE, &type, sizeof type},   {CKA_SENSITIVE, &yes, sizeof yes},
        {CKA_EXTRACTABLE, &no, sizeof no},    {CKA_SIGN, &yes, sizeof yes},
        {CKA_LABEL, (void *)label, len},
    };
    return s->f->C_GenerateKeyPair(s->h, &m, pt, sizeof pt / sizeof *pt, kt, sizeof kt / sizeof *kt,
                                   pub, priv);
}

// --- Keys ------------------------------------------------------------------------------

unsigned long lm_p11_generate_ed25519(lm_p11_session *s, const char *label,
                                      unsigned char public_key[LM_P11_PUBLIC_KEY_LEN]) {
    // id-Ed25519 (1.3.101.112) first; PKCS#11 3.0 also names the curve as a PrintableString.
    static const CK_BYTE oid[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
    static const CK_BYTE name[] = {0x13, 0x0c, 'e', 'd', 'w', 'a', 'r', 'd', 's', '2', '5', '5', '1', '9'};
    size_t len;
    if (s == NULL || !label_ok(label, &len) || public_key == NULL) return CKR_ARGUMENTS_BAD;
    pthread_mutex_lock(&s->lock);
    CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE;
    CK_RV rv = label_free(s, label, len);
    if (rv == CKR_OK) {
        rv = generate(s, label, len, oid, sizeof oid, &pub, &priv);
        if (rv == CKR_ATTRIBUTE_VALUE_INVALID || rv == CKR_CURVE_NOT_SUPPORTED ||
            rv == CKR_DOMAIN_PARAMS_INVALID || rv == CKR_TEMPLATE_INCONSISTENT) {
            CK_RV second = generate(s, label, len, name, sizeof name, &pub, &priv);
            if (second == CKR_OK) rv = CKR_OK; // else report the standard form's refusal
        }
    }
    if (rv == CKR_OK && (rv = read_public(s, pub, public_key)) != CKR_OK) {
        // A key whose public half cannot be read is of no use: leave nothing behind.
        s->f->C_DestroyObject(s->h, priv);
        s->f->C_DestroyObject(s->h, pub);
    }
    pthread_mutex_unlock(&s->lock);
    if (rv != CKR_OK) memset(public_key, 0, LM_P11_PUBLIC_KEY_LEN);
    return rv;
}

unsigned long lm_p11_relabel(lm_p11_session *s, const char *old_label, const char *new_label) {
    size_t old_len, new_len;
    if (s == NULL || !label_ok(old_label, &old_len) || !label_ok(new_label, &new_len))
        return CKR_ARGUMENTS_BAD;
    int same = old_len == new_len && memcmp(old_label, new_label, old_len) == 0;
    pthread_mutex_lock(&s->lock);
    memset(s->cache, 0, sizeof s->cache);
    CK_OBJECT_HANDLE priv, pub = CK_INVALID_HANDLE;
    CK_RV rv = find_one(s, CKO_PRIVATE_KEY, old_label, old_len, &priv);
    if (rv == CKR_OK) {
        rv = find_one(s, CKO_PUBLIC_KEY, old_label, old_len, &pub);
        if (rv == LM_P11_KEY_NOT_FOUND) { // an imported key may have no public object
            pub = CK_INVALID_HANDLE;
            rv = CKR_OK;
        }
    }
    if (rv == CKR_OK && !same) rv = label_free(s, new_label, new_len);
    if (rv == CKR_OK && !same) {
        CK_ATTRIBUTE to = {CKA_LABEL, (void *)new_label, new_len};
        CK_ATTRIBUTE back = {CKA_LABEL, (void *)old_label, old_len};
        rv = s->f->C_SetAttributeValue(s->h, priv, &to, 1);
        if (rv == CKR_OK && pub != CK_INVALID_HANDLE &&
            (rv = s->f->C_SetAttributeValue(s->h, pub, &to, 1)) != CKR_OK)
            s->f->C_SetAttributeValue(s->h, priv, &back, 1);
    }
    pthread_mutex_unlock(&s->lock);
    return rv;
}

unsigned long lm_p11_sign_ed25519(lm_p11_session *s, const char *label, const unsigned char *message,
                                  size_t message_len, unsigned char signature[LM_P11_SIGNATURE_LEN]) {
    static const unsigned char empty[1];
    size_t len;
    if (s == NULL || !label_ok(label, &len) || (message == NULL && message_len != 0) || signature == NULL)
        return CKR_ARGUMENTS_BAD;
    pthread_mutex_lock(&s->lock);
    CK_OBJECT_HANDLE key;
    CK_RV rv = private_key(s, label, len, &key);
    if (rv == CKR_OK) {
        CK_MECHANISM m = {CKM_EDDSA, NULL, 0}; // no CK_EDDSA_PARAMS: pure Ed25519
        rv = s->f->C_SignInit(s->h, &m, key);
    }
    if (rv == CKR_OK) {
        CK_ULONG n = LM_P11_SIGNATURE_LEN;
        rv = s->f->C_Sign(s->h, (CK_BYTE_PTR)(message ? message : empty), message_len, signature, &n);
        if (rv == CKR_BUFFER_TOO_SMALL) {
            // The operation stays active after this one error; end it so the session
            // remains usable, then report the module's odd answer.
            unsigned char drain[512];
            CK_ULONG dn = sizeof drain;
            if (n <= sizeof drain)
                s->f->C_Sign(s->h, (CK_BYTE_PTR)(message ? message : empty), message_len, drain, &dn);
            explicit_bzero(drain, sizeof drain);
            rv = CKR_FUNCTION_FAILED;
        } else if (rv == CKR_OK && n != LM_P11_SIGNATURE_LEN) {
            rv = CKR_FUNCTION_FAILED;
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (rv != CKR_OK) memset(signature, 0, LM_P11_SIGNATURE_LEN);
    return rv;
}

unsigned long lm_p11_public_key(lm_p11_session *s, const char *label,
                                unsigned char public_key[LM_P11_PUBLIC_KEY_LEN]) {
    size_t len;
    if (s == NULL || !label_ok(label, &len) || public_key == NULL) return CKR_ARGUMENTS_BAD;
    pthread_mutex_lock(&s->lock);
    CK_OBJECT_HANDLE pub;
    CK_RV rv = find_one(s, CKO_PUBLIC_KEY, label, len, &pub);
    if (rv == CKR_OK) rv = read_public(s, pub, public_key);
    pthread_mutex_unlock(&s->lock);
    if (rv != CKR_OK) memset(public_key, 0, LM_P11_PUBLIC_KEY_LEN);
    return rv;
}

unsigned long lm_p11_destroy(lm_p11_session *s, const char *label) {
    // The private key first: it is the half that must never sign again.
    static const CK_OBJECT_CLASS classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
    size_t len;
    if (s == NULL || !label_ok(label, &len)) return CKR_ARGUMENTS_BAD;
    pthread_mutex_lock(&s->lock);
    memset(s->cache, 0, sizeof s->cache);
    CK_RV rv = CKR_OK;
    CK_ULONG destroyed = 0;
    for (size_t c = 0; c < 2 && rv == CKR_OK; c++) {
        // Objects cannot be destroyed during a search: find a batch, end it, destroy it.
        // Bounded, in case a module reports success without destroying.
        for (int round = 0; round < DESTROY_ROUNDS && rv == CKR_OK; round++) {
            CK_OBJECT_HANDLE found[FIND_BATCH];
            CK_ULONG n;
            if ((rv = find(s, classes[c], label, len, found, FIND_BATCH, &n)) != CKR_OK || n == 0) break;
            for (CK_ULONG i = 0; i < n && rv == CKR_OK; i++) rv = s->f->C_DestroyObject(s->h, found[i]);
            destroyed += n;
        }
    }
    if (rv == CKR_OK && destroyed == 0) rv = absent(s);
    pthread_mutex_unlock(&s->lock);
    return rv;
}

unsigned long lm_p11_is_extractable(lm_p11_session *s, const char *label, int *extractable, int *sensitive) {
    size_t len;
    if (s == NULL || !label_ok(label, &len) || extractable == NULL || sensitive == NULL)
        return CKR_ARGUMENTS_BAD;
    pthread_mutex_lock(&s->lock);
    CK_OBJECT_HANDLE priv;
    CK_BBOOL e = CK_TRUE, se = CK_FALSE; // assume the worst if the module answers oddly
    CK_RV rv = find_one(s, CKO_PRIVATE_KEY, label, len, &priv);
    if (rv == CKR_OK) {
        CK_ATTRIBUTE a[] = {{CKA_EXTRACTABLE, &e, sizeof e}, {CKA_SENSITIVE, &se, sizeof se}};
        rv = s->f->C_GetAttributeValue(s->h, priv, a, 2);
    }
    pthread_mutex_unlock(&s->lock);
    *extractable = e != CK_FALSE;
    *sensitive = se != CK_FALSE;
    return rv;
}

// --- Secret keys (AES-256-GCM, for wrapping the master key) ------------------------------

unsigned long lm_p11_generate_aes256(lm_p11_session *s, const char *label) {
    size_t len;
    if (s == NULL || !label_ok(label, &len)) return CKR_ARGUMENTS_BAD;
    pthread_mutex_lock(&s->lock);
    CK_OBJECT_HANDLE h;
    CK_ULONG n;
    CK_RV rv = find(s, CKO_SECRET_KEY, label, len, &h, 1, &n);
    if (rv == CKR_OK && n != 0) rv = LM_P11_LABEL_EXISTS;
    if (rv == CKR_OK) {
        CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
        CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
        CK_KEY_TYPE type = CKK_AES;
        CK_ULONG bytes = 32;
        CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
        CK_ATTRIBUTE t[] = {
            {CKA_CLASS, &cls, sizeof cls},         {CKA_KEY_TYPE, &type, sizeof type},
            {CKA_TOKEN, &yes, sizeof yes},         {CKA_PRIVATE, &yes, sizeof yes},
            {CKA_SENSITIVE, &yes, sizeof yes},     {CKA_EXTRACTABLE, &no, sizeof no},
            {CKA_ENCRYPT, &yes, sizeof yes},       {CKA_DECRYPT, &yes, sizeof yes},
            {CKA_VALUE_LEN, &bytes, sizeof bytes}, {CKA_LABEL, (void *)label, len},
        };
        rv = s->f->C_GenerateKey(s->h, &m, t, sizeof t / sizeof *t, &h);
    }
    pthread_mutex_unlock(&s->lock);
    return rv;
}

// One AES-GCM operation, single-part: C_EncryptInit/C_Encrypt or C_DecryptInit/C_Decrypt.
static CK_RV gcm(lm_p11_session *s, int encrypt, const char *label, const unsigned char iv[LM_P11_GCM_IV_LEN],
                 const unsigned char *aad, size_t aad_len, const unsigned char *in, size_t in_len,
                 unsigned char *out, size_t out_len) {
    static const unsigned char empty[1];
    size_t len;
    if (s == NULL || !label_ok(label, &len) || iv == NULL || (aad == NULL && aad_len != 0) ||
        (in == NULL && in_len != 0) || out == NULL)
        return CKR_ARGUMENTS_BAD;
    pthread_mutex_lock(&s->lock);
    CK_OBJECT_HANDLE key;
    CK_RV rv = find_one(s, CKO_SECRET_KEY, label, len, &key);
    CK_GCM_PARAMS params = {(CK_BYTE_PTR)iv, LM_P11_GCM_IV_LEN, LM_P11_GCM_IV_LEN * 8,
                            (CK_BYTE_PTR)(aad ? aad : empty), aad_len, LM_P11_GCM_TAG_LEN * 8};
    CK_MECHANISM m = {CKM_AES_GCM, &params, sizeof params};
    if (rv == CKR_OK) rv = encrypt ? s->f->C_EncryptInit(s->h, &m, key) : s->f->C_DecryptInit(s->h, &m, key);
    // Some modules (SoftHSM) want room for the whole input before they know the output's
    // size: work in a buffer as large as the input plus a tag, then copy out what is asked.
    CK_ULONG room = in_len + LM_P11_GCM_TAG_LEN;
    unsigned char *scratch = rv == CKR_OK ? malloc(room) : NULL;
    if (rv == CKR_OK && scratch == NULL) rv = CKR_HOST_MEMORY;
    if (rv == CKR_OK) {
        CK_ULONG n = room;
        CK_BYTE_PTR source = (CK_BYTE_PTR)(in ? in : empty);
        rv = encrypt ? s->f->C_Encrypt(s->h, source, in_len, scratch, &n) : s->f->C_Decrypt(s->h, source, in_len, scratch, &n);
        if (rv == CKR_OK && n != out_len) rv = CKR_FUNCTION_FAILED;
        if (rv == CKR_OK) memcpy(out, scratch, out_len);
    }
    if (scratch) {
        explicit_bzero(scratch, room);
        free(scratch);
    }
    pthread_mutex_unlock(&s->lock);
    if (rv != CKR_OK) memset(out, 0, out_len);
    return rv;
}

unsigned long lm_p11_aes_gcm_encrypt(lm_p11_session *s, const char *label, const unsigned char iv[LM_P11_GCM_IV_LEN],
                                     const unsigned char *aad, size_t aad_len, const unsigned char *plaintext,
                                     size_t plaintext_len, unsigned char *out) {
    return gcm(s, 1, label, iv, aad, aad_len, plaintext, plaintext_len, out, plaintext_len + LM_P11_GCM_TAG_LEN);
}

unsigned long lm_p11_aes_gcm_decrypt(lm_p11_session *s, const char *label, const unsigned char iv[LM_P11_GCM_IV_LEN],
                                     const unsigned char *aad, size_t aad_len, const unsigned char *sealed,
                                     size_t sealed_len, unsigned char *out) {
    if (sealed_len < LM_P11_GCM_TAG_LEN) return CKR_ENCRYPTED_DATA_LEN_RANGE;
    return gcm(s, 0, label, iv, aad, aad_len, sealed, sealed_len, out, sealed_len - LM_P11_GCM_TAG_LEN);
}

// --- Codes -----------------------------------------------------------------------------

int lm_p11_needs_reopen(unsigned long rv) {
    switch (rv) {
    case CKR_SESSION_HANDLE_INVALID: case CKR_SESSION_CLOSED: case CKR_DEVICE_REMOVED:
    case CKR_DEVICE_ERROR: case CKR_TOKEN_NOT_PRESENT: case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_OPERATION_ACTIVE: // a signature the module could not finish leaves the session wedged
        return 1;
    default:
        return 0;
    }
}

#define N(code) {code, #code}
static const struct {
    unsigned long rv;
    const char *name;
} names[] = {
    N(CKR_OK), N(CKR_CANCEL), N(CKR_HOST_MEMORY), N(CKR_SLOT_ID_INVALID), N(CKR_GENERAL_ERROR),
    N(CKR_FUNCTION_FAILED), N(CKR_ARGUMENTS_BAD), N(CKR_NO_EVENT), N(CKR_NEED_TO_CREATE_THREADS),
    N(CKR_CANT_LOCK), N(CKR_ATTRIBUTE_READ_ONLY), N(CKR_ATTRIBUTE_SENSITIVE),
    N(CKR_ATTRIBUTE_TYPE_INVALID), N(CKR_ATTRIBUTE_VALUE_INVALID), N(CKR_ACTION_PROHIBITED),
    N(CKR_DATA_INVALID), N(CKR_DATA_LEN_RANGE), N(CKR_DEVICE_ERROR), N(CKR_DEVICE_MEMORY),
    N(CKR_DEVICE_REMOVED), N(CKR_ENCRYPTED_DATA_INVALID), N(CKR_ENCRYPTED_DATA_LEN_RANGE),
    N(CKR_FUNCTION_CANCELED), N(CKR_FUNCTION_NOT_PARALLEL), N(CKR_FUNCTION_NOT_SUPPORTED),
    N(CKR_KEY_HANDLE_INVALID), N(CKR_KEY_SIZE_RANGE), N(CKR_KEY_TYPE_INCONSISTENT),
    N(CKR_KEY_NOT_NEEDED), N(CKR_KEY_CHANGED), N(CKR_KEY_NEEDED), N(CKR_KEY_INDIGESTIBLE),
    N(CKR_KEY_FUNCTION_NOT_PERMITTED), N(CKR_KEY_NOT_WRAPPABLE), N(CKR_KEY_UNEXTRACTABLE),
    N(CKR_MECHANISM_INVALID), N(CKR_MECHANISM_PARAM_INVALID), N(CKR_OBJECT_HANDLE_INVALID),
    N(CKR_OPERATION_ACTIVE), N(CKR_OPERATION_NOT_INITIALIZED), N(CKR_PIN_INCORRECT),
    N(CKR_PIN_INVALID), N(CKR_PIN_LEN_RANGE), N(CKR_PIN_EXPIRED), N(CKR_PIN_LOCKED),
    N(CKR_SESSION_CLOSED), N(CKR_SESSION_COUNT), N(CKR_SESSION_HANDLE_INVALID),
    N(CKR_SESSION_PARALLEL_NOT_SUPPORTED), N(CKR_SESSION_READ_ONLY), N(CKR_SESSION_EXISTS),
    N(CKR_SESSION_READ_ONLY_EXISTS), N(CKR_SESSION_READ_WRITE_SO_EXISTS), N(CKR_SIGNATURE_INVALID),
    N(CKR_SIGNATURE_LEN_RANGE), N(CKR_TEMPLATE_INCOMPLETE), N(CKR_TEMPLATE_INCONSISTENT),
    N(CKR_TOKEN_NOT_PRESENT), N(CKR_TOKEN_NOT_RECOGNIZED), N(CKR_TOKEN_WRITE_PROTECTED),
    N(CKR_UNWRAPPING_KEY_HANDLE_INVALID), N(CKR_UNWRAPPING_KEY_SIZE_RANGE),
    N(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT), N(CKR_USER_ALREADY_LOGGED_IN), N(CKR_USER_NOT_LOGGED_IN),
    N(CKR_USER_PIN_NOT_INITIALIZED), N(CKR_USER_TYPE_INVALID), N(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
    N(CKR_USER_TOO_MANY_TYPES), N(CKR_WRAPPED_KEY_INVALID), N(CKR_WRAPPED_KEY_LEN_RANGE),
    N(CKR_WRAPPING_KEY_HANDLE_INVALID), N(CKR_WRAPPING_KEY_SIZE_RANGE),
    N(CKR_WRAPPING_KEY_TYPE_INCONSISTENT), N(CKR_RANDOM_SEED_NOT_SUPPORTED), N(CKR_RANDOM_NO_RNG),
    N(CKR_DOMAIN_PARAMS_INVALID), N(CKR_CURVE_NOT_SUPPORTED), N(CKR_BUFFER_TOO_SMALL),
    N(CKR_SAVED_STATE_INVALID), N(CKR_INFORMATION_SENSITIVE), N(CKR_STATE_UNSAVEABLE),
    N(CKR_CRYPTOKI_NOT_INITIALIZED), N(CKR_CRYPTOKI_ALREADY_INITIALIZED), N(CKR_MUTEX_BAD),
    N(CKR_MUTEX_NOT_LOCKED), N(CKR_NEW_PIN_MODE), N(CKR_NEXT_OTP), N(CKR_EXCEEDED_MAX_ITERATIONS),
    N(CKR_FIPS_SELF_TEST_FAILED), N(CKR_LIBRARY_LOAD_FAILED), N(CKR_PIN_TOO_WEAK),
    N(CKR_PUBLIC_KEY_INVALID), N(CKR_FUNCTION_REJECTED),
    N(LM_P11_KEY_NOT_FOUND), N(LM_P11_KEY_AMBIGUOUS), N(LM_P11_LABEL_EXISTS),
    N(LM_P11_MODULE_LOAD_FAILED), N(LM_P11_TOKEN_NOT_FOUND), N(LM_P11_TOKEN_AMBIGUOUS),
    N(LM_P11_BAD_PUBLIC_KEY),
};
#undef N

const char *lm_p11_error_name(unsigned long rv) {
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (names[i].rv == rv) return names[i].name;
    return rv >= CKR_VENDOR_DEFINED ? "CKR_VENDOR_DEFINED" : "CKR_UNKNOWN";
}

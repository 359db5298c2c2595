#ifndef CPKCS11_H
#define CPKCS11_H

#include <stddef.h>

// Ed25519 signing with keys that live in a PKCS#11 token and never leave it. The vendor's
// module is loaded at run time (dlopen), so nothing links against a PKCS#11 library and no
// PKCS#11 type appears here.
//
// Every function returns a PKCS#11 CKR code (0 = OK) or one of the LM_P11_* codes below;
// lm_p11_error_name gives its name. Calls on one handle are serialised by a lock inside it
// (a PKCS#11 session is not safe for concurrent use), so a handle may be shared by threads,
// but each call then waits for the previous one: open one handle per signing thread for
// parallelism. No call may be in flight on a handle, or follow, once lm_p11_close starts.
//
// Labels are 1...LM_P11_LABEL_MAX bytes, compared byte for byte with CKA_LABEL. A call that
// looks a key up by label and finds none checks why before answering LM_P11_KEY_NOT_FOUND:
// CKR_USER_NOT_LOGGED_IN if the session lost its login, CKR_TOKEN_NOT_PRESENT (or the
// module's own session error) if the token vanished or was replaced. lm_p11_needs_reopen is
// 1 for those and 0 for a key that is truly gone.

/// An open, logged-in session on one token of one module.
typedef struct lm_p11_session lm_p11_session;

#define LM_P11_OK 0UL
#define LM_P11_PUBLIC_KEY_LEN 32
#define LM_P11_SIGNATURE_LEN 64
#define LM_P11_LABEL_MAX 128
#define LM_P11_PIN_MAX 256

// Codes of this library, in PKCS#11's vendor-defined range (0x8C11xxxx).
/// No key (or no key pair) with that label, as seen by a logged-in session.
#define LM_P11_KEY_NOT_FOUND 0x8C110001UL
/// More than one private (or public) key carries the label: refusing to guess.
#define LM_P11_KEY_AMBIGUOUS 0x8C110002UL
/// A key already carries the label given to generate or relabel.
#define LM_P11_LABEL_EXISTS 0x8C110003UL
/// The module could not be loaded, or exports no C_GetFunctionList.
#define LM_P11_MODULE_LOAD_FAILED 0x8C110004UL
/// No token with that label is present in the module (or, LM_P11_TOKEN_AMBIGUOUS, several).
#define LM_P11_TOKEN_NOT_FOUND 0x8C110005UL
#define LM_P11_TOKEN_AMBIGUOUS 0x8C110006UL
/// CKA_EC_POINT is neither a DER OCTET STRING of 32 bytes nor 32 raw bytes.
#define LM_P11_BAD_PUBLIC_KEY 0x8C110007UL

/// The name of a return code, e.g. "CKR_PIN_INCORRECT" or "LM_P11_KEY_NOT_FOUND"; a static
/// string. Unknown codes give "CKR_VENDOR_DEFINED" (>= 0x80000000) or "CKR_UNKNOWN".
const char *lm_p11_error_name(unsigned long rv);

/// 1 if the code means the session or the token went away (session closed or invalid,
/// device removed or in error, token absent or replaced, login lost) or the session is stuck
/// in an operation: lm_p11_reopen may help, once.
int lm_p11_needs_reopen(unsigned long rv);

/// Loads the module at `module_path`, initialises it (once per process; a module another
/// component initialised is used as is and never finalised here), finds the present token
/// labelled `token_label`, opens a read-write session and logs in as the user with `pin`
/// (NUL-terminated; NULL for a token with a protected authentication path). The PIN is
/// kept, wiped on close, so that lm_p11_reopen can log in again. On failure *out is NULL
/// and `message` (if not NULL) holds a sentence for an operator.
/// Note: PKCS#11 login state is per application and token; while another handle is logged
/// in to the same token, C_Login answers "already logged in" without checking this PIN.
unsigned long lm_p11_open(const char *module_path, const char *token_label, const char *pin,
                          lm_p11_session **out, char *message, size_t message_len);

/// Closes the session and, with the last handle on the module, finalises (if this library
/// initialised it) and unloads it. Does not call C_Logout: login state is shared by all the
/// application's sessions on the token, and closing the last one ends it. NULL is a no-op.
void lm_p11_close(lm_p11_session *session);

/// Closes the session (if any), finds the token by label again, opens a new session and
/// logs in again. For use after a code for which lm_p11_needs_reopen is 1. If the token is
/// not found and this handle is the module's only one, and this library initialised the
/// module, the module is finalised and initialised again first: some modules (SoftHSM) only
/// discover tokens at C_Initialize. With other handles open on the module, a token that
/// went away stays unreachable until they are all closed.
unsigned long lm_p11_reopen(lm_p11_session *session);

/// Generates an Ed25519 key pair on the token under `label`: the private key is a token
/// object, private, sensitive, not extractable, for signing only. Writes the raw public key.
/// LM_P11_LABEL_EXISTS if a key already has the label.
unsigned long lm_p11_generate_ed25519(lm_p11_session *session, const char *label,
                                      unsigned char public_key[LM_P11_PUBLIC_KEY_LEN]);

/// Gives the key pair under `old_label` the label `new_label` (private key, then public
/// key; the first is restored if the second fails). LM_P11_KEY_NOT_FOUND without a private
/// key under `old_label`; LM_P11_LABEL_EXISTS if a key already has `new_label`.
unsigned long lm_p11_relabel(lm_p11_session *session, const char *old_label,
                             const char *new_label);

/// Signs `message` (pure Ed25519, CKM_EDDSA without parameters) with the private key under
/// `label`. LM_P11_KEY_NOT_FOUND if there is none; CKR_USER_NOT_LOGGED_IN if the session
/// lost its login (private keys are then invisible). `signature` is zeroed on failure.
unsigned long lm_p11_sign_ed25519(lm_p11_session *session, const char *label,
                                  const unsigned char *message, size_t message_len,
                                  unsigned char signature[LM_P11_SIGNATURE_LEN]);

/// The raw public key of the public key object under `label`; LM_P11_KEY_NOT_FOUND if
/// there is none.
unsigned long lm_p11_public_key(lm_p11_session *session, const char *label,
                                unsigned char public_key[LM_P11_PUBLIC_KEY_LEN]);

/// Destroys every private and public key under `label`, private keys first, so that the key
/// can never sign again. LM_P11_KEY_NOT_FOUND if there was none.
unsigned long lm_p11_destroy(lm_p11_session *session, const char *label);

/// CKA_EXTRACTABLE and CKA_SENSITIVE of the private key under `label`, as 0 or 1.
unsigned long lm_p11_is_extractable(lm_p11_session *session, const char *label,
                                    int *extractable, int *sensitive);

#define LM_P11_GCM_IV_LEN 12
#define LM_P11_GCM_TAG_LEN 16

/// Generates an AES-256 secret key in the token under `label`: a token object, private,
/// sensitive, not extractable, for encryption and decryption only (it wraps the master
/// key). LM_P11_LABEL_EXISTS if a secret key already has the label.
unsigned long lm_p11_generate_aes256(lm_p11_session *session, const char *label);

/// AES-256-GCM (CKM_AES_GCM, 96-bit IV, 128-bit tag) under the secret key `label`:
/// `out` (plaintext_len + LM_P11_GCM_TAG_LEN bytes) gets ciphertext then tag.
unsigned long lm_p11_aes_gcm_encrypt(lm_p11_session *session, const char *label,
                                     const unsigned char iv[LM_P11_GCM_IV_LEN], const unsigned char *aad,
                                     size_t aad_len, const unsigned char *plaintext, size_t plaintext_len,
                                     unsigned char *out);

/// The reverse: `sealed` is ciphertext then tag, `out` (sealed_len - LM_P11_GCM_TAG_LEN
/// bytes) the plaintext; a tag that does not match fails (the module's code, e.g.
/// CKR_ENCRYPTED_DATA_INVALID) and `out` is zeroed.
unsigned long lm_p11_aes_gcm_decrypt(lm_p11_session *session, const char *label,
                                     const unsigned char iv[LM_P11_GCM_IV_LEN], const unsigned char *aad,
                                     size_t aad_len, const unsigned char *sealed, size_t sealed_len,
                                     unsigned char *out);

#endif

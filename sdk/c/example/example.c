/* A product's start: activate this machine once, then validate with a verified answer.
 *   cc example.c $(pkg-config --cflags --libs licensing-client) -o example
 *   LM_GATEWAY=unix:data/run/gateway.sock LM_API_KEY=lmk_... LM_KID=... LM_PUBLIC_KEY=<64 hex> ./example <license key> */
#include <licensing_client.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hex_key(const char *hex, unsigned char key[32]) {
    if (!hex || strlen(hex) != 64) return -1;
    for (int index = 0; index < 32; index++) {
        unsigned int byte;
        if (sscanf(hex + index * 2, "%2x", &byte) != 1) return -1;
        key[index] = (unsigned char)byte;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s <license key>\n", argv[0]);
        return 2;
    }
    lc_config config = {.endpoint = getenv("LM_GATEWAY"), .api_key = getenv("LM_API_KEY"), .ca_file = getenv("LM_GATEWAY_CA"), .offline_grace_seconds = 3 * 86400};
    lc_error error;
    lc_client *client = NULL;
    unsigned char key[32];
    if (lc_client_new(&config, &client, &error) != LC_OK) {
        fprintf(stderr, "%s\n", error.message);
        return 2;
    }
    if (hex_key(getenv("LM_PUBLIC_KEY"), key) != 0 || lc_client_pin_key(client, getenv("LM_KID") ? getenv("LM_KID") : "", key, &error) != LC_OK) {
        fprintf(stderr, "set LM_KID and LM_PUBLIC_KEY (64 hex digits): the key answers are signed with\n");
        lc_client_free(client);
        return 2;
    }
    const char *machine = "example-machine";
    int reason = 0;
    if (lc_activate(client, argv[1], machine, "Example", &reason, &error) != LC_OK) fprintf(stderr, "activation: %s\n", error.message);
    lc_validation answer;
    int status = lc_validate(client, argv[1], machine, "", &answer, &error);
    if (status != LC_OK) {
        fprintf(stderr, "not validated: %s\n", error.message);
        lc_client_free(client);
        return 1;
    }
    printf("%s: license %s%s\n", answer.valid ? "valid" : "not valid", answer.license_id, answer.offline_since ? " (offline)" : "");
    for (size_t index = 0; index < answer.feature_count; index++) printf("  feature %s\n", answer.features[index]);
    int valid = answer.valid;
    lc_validation_clear(&answer);
    lc_client_free(client);
    return valid ? 0 : 1;
}

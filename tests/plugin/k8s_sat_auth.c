/* K8S-SAT enhanced authentication for mosquitto 2.0.11 (plugin API v5), for satmqtt's tests only.
 *
 * Config (needs `per_listener_settings false`, or MOSQ_EVT_TICK never fires in 2.0.11):
 *   plugin /path/k8s_sat_auth.so
 *   plugin_opt_tokens_dir /path/to/dir
 *
 * Every regular file in tokens_dir (names not starting with '.') is one valid token, trailing
 * whitespace trimmed. The directory is re-read on every authentication, so a test adds and removes
 * tokens by writing files. A JWT-shaped token carries `exp` in its payload and is refused once it has
 * passed; any other token never expires. Nothing checks signatures: the test owns the directory.
 *
 * - CONNECT or AUTH 0x19 with method K8S-SAT (MOSQ_EVT_EXT_AUTH_START; 2.0.11 tells the plugin
 *   nothing about re-auth, so a re-auth is recognised by the client already being in the table):
 *   data is a valid token -> MOSQ_ERR_SUCCESS (CONNACK 0x00 / AUTH 0x00, method echoed by the
 *   broker), else MOSQ_ERR_AUTH (CONNACK 0x87). Other methods are deferred (CONNACK 0x8C).
 *   2.0.11 deviation: a *failed* re-auth is answered with CONNACK 0x87, then the connection is closed
 *   (fixed in 2.0.13, which sends DISCONNECT).
 * - MOSQ_EVT_TICK (its timestamps are 0 in 2.0.11, so time() is used): a client whose accepted token's
 *   exp has passed is kicked (DISCONNECT 0x98, then close).
 * Log lines start with "k8s-sat:" and name the token only by length and FNV-1a hash, never its bytes.
 */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define METHOD "K8S-SAT"
#define MAX_CLIENTS 256
#define MAX_TOKEN 65536

struct entry { const struct mosquitto *client; char id[256]; time_t exp; };
static struct entry table[MAX_CLIENTS];
static char tokens_dir[4096];
static mosquitto_plugin_id_t *plugin_id;
static char file_buf[MAX_TOKEN + 1];

static unsigned fnv1a(const unsigned char *p, size_t n)
{
	unsigned h = 2166136261u;
	while(n--){ h ^= *p++; h *= 16777619u; }
	return h;
}

static int b64url(int c)
{
	if(c >= 'A' && c <= 'Z') return c - 'A';
	if(c >= 'a' && c <= 'z') return c - 'a' + 26;
	if(c >= '0' && c <= '9') return c - '0' + 52;
	if(c == '-' || c == '+') return 62;
	if(c == '_' || c == '/') return 63;
	return -1;
}

/* The payload's "exp" number, or 0 (never expires) when the token is not a JWT with one. */
static time_t jwt_exp(const char *tok, size_t len)
{
	static char payload[MAX_TOKEN];
	const char *a = memchr(tok, '.', len), *b;
	size_t out = 0; unsigned acc = 0; int bits = 0, v;
	if(!a || !(b = memchr(a + 1, '.', len - (size_t)(a + 1 - tok)))) return 0;
	for(const char *p = a + 1; p < b; p++){
		if((v = b64url((unsigned char)*p)) < 0) return 0;
		acc = (acc << 6) | (unsigned)v; bits += 6;
		if(bits >= 8){ bits -= 8; payload[out++] = (char)((acc >> bits) & 0xff); }
	}
	payload[out] = '\0';
	const char *e = strstr(payload, "\"exp\"");
	if(!e) return 0;
	e += 5;
	while(*e == ' ' || *e == ':') e++;
	return (time_t)strtoll(e, NULL, 10);
}

/* 1 if data is one of the tokens in tokens_dir (its exp in *exp), else 0. */
static int find_token(const void *data, size_t len, time_t *exp)
{
	DIR *dir = opendir(tokens_dir);
	struct dirent *de;
	int found = 0;
	if(!dir) return 0;
	while(!found && (de = readdir(dir))){
		char path[8192];
		if(de->d_name[0] == '.') continue;
		snprintf(path, sizeof(path), "%s/%s", tokens_dir, de->d_name);
		FILE *f = fopen(path, "rb");
		if(!f) continue;
		size_t n = fread(file_buf, 1, MAX_TOKEN, f);
		fclose(f);
		while(n > 0 && isspace((unsigned char)file_buf[n - 1])) n--;
		if(n == len && n > 0 && memcmp(file_buf, data, n) == 0){
			found = 1;
			*exp = jwt_exp(file_buf, n);
		}
	}
	closedir(dir);
	return found;
}

static struct entry *lookup(const struct mosquitto *client)
{
	for(int i = 0; i < MAX_CLIENTS; i++) if(table[i].client == client) return &table[i];
	return NULL;
}

static int on_auth_start(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_extended_auth *ed = event_data;
	const char *id = mosquitto_client_id(ed->client);
	struct entry *known = lookup(ed->client);
	const char *kind = known ? "reauth" : "connect";
	time_t exp = 0, now = time(NULL);
	(void)event; (void)userdata;
	if(!id) id = "";
	if(!ed->auth_method || strcmp(ed->auth_method, METHOD) != 0){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "k8s-sat: %s %s method=%s defer (not " METHOD ")",
				kind, id, ed->auth_method ? ed->auth_method : "(none)");
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	unsigned tag = fnv1a(ed->data_in, ed->data_in_len);
	if(!find_token(ed->data_in, ed->data_in_len, &exp)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "k8s-sat: %s %s method=" METHOD " token=len:%u,fnv:%08x refuse unknown",
				kind, id, ed->data_in_len, tag);
		return MOSQ_ERR_AUTH;
	}
	if(exp != 0 && exp <= now){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "k8s-sat: %s %s method=" METHOD " token=len:%u,fnv:%08x refuse expired exp=%lld",
				kind, id, ed->data_in_len, tag, (long long)exp);
		return MOSQ_ERR_AUTH;
	}
	if(!known) known = lookup(NULL);
	if(!known){
		mosquitto_log_printf(MOSQ_LOG_ERR, "k8s-sat: %s %s refuse: client table full", kind, id);
		return MOSQ_ERR_AUTH;
	}
	known->client = ed->client;
	known->exp = exp;
	snprintf(known->id, sizeof(known->id), "%s", id);
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "k8s-sat: %s %s method=" METHOD " token=len:%u,fnv:%08x accept exp=%lld",
			kind, id, ed->data_in_len, tag, (long long)exp);
	return MOSQ_ERR_SUCCESS;
}

static int on_tick(int event, void *event_data, void *userdata)
{
	time_t now = time(NULL);
	(void)event; (void)event_data; (void)userdata;
	for(int i = 0; i < MAX_CLIENTS; i++){
		if(table[i].client && table[i].exp != 0 && table[i].exp <= now){
			mosquitto_log_printf(MOSQ_LOG_NOTICE, "k8s-sat: kick %s exp=%lld", table[i].id, (long long)table[i].exp);
			table[i].client = NULL;
			mosquitto_kick_client_by_clientid(table[i].id, false);
		}
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	struct entry *e = lookup(ed->client);
	(void)event; (void)userdata;
	if(e) e->client = NULL;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++) if(supported_versions[i] == 5) return 5;
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	plugin_id = identifier;
	for(int i = 0; i < option_count; i++){
		if(!strcmp(options[i].key, "tokens_dir")) snprintf(tokens_dir, sizeof(tokens_dir), "%s", options[i].value);
	}
	if(!tokens_dir[0]){
		mosquitto_log_printf(MOSQ_LOG_ERR, "k8s-sat: plugin_opt_tokens_dir is not set");
		return MOSQ_ERR_INVAL;
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "k8s-sat: loaded, tokens_dir=%s", tokens_dir);
	if(mosquitto_callback_register(identifier, MOSQ_EVT_EXT_AUTH_START, on_auth_start, NULL, NULL)
			|| mosquitto_callback_register(identifier, MOSQ_EVT_TICK, on_tick, NULL, NULL)
			|| mosquitto_callback_register(identifier, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL)){
		return MOSQ_ERR_UNKNOWN;
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata; (void)options; (void)option_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_EXT_AUTH_START, on_auth_start, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_TICK, on_tick, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
	return MOSQ_ERR_SUCCESS;
}

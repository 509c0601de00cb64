/*
 * sat_tokens_auth: a mosquitto 2.0 plugin for the bench's token-rotation measurement.
 *
 * mosquitto keeps one password per user, but during a kubelet rotation two service-account
 * tokens are valid at once: the old one until its `exp`, the new one from the moment it is
 * issued. This plugin models exactly that: user `$sat` is accepted when its password equals a
 * line of the file named by `plugin_opt_tokens_file` (read on every CONNECT, so the bench
 * appends the new token before the kubelet-style write and both stay valid); any other
 * password for `$sat` is refused (CONNACK 0x87). The bench's subscriber logs in as
 * `plugin_opt_subscriber_username` / `plugin_opt_subscriber_password`; anyone else is refused
 * (mosquitto 2.0.11 refuses a client every plugin deferred on).
 *
 * Build: gcc -O2 -fPIC -shared -o sat_tokens_auth.so sat_tokens_auth.c
 * Use:   plugin /path/sat_tokens_auth.so
 *        plugin_opt_tokens_file /path/valid-tokens
 *        plugin_opt_subscriber_username NAME
 *        plugin_opt_subscriber_password PASSWORD
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

static mosquitto_plugin_id_t *plugin_id;
static char *tokens_file;
static char *subscriber_username;
static char *subscriber_password;

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++) {
		if (supported_versions[i] == 5) {
			return 5;
		}
	}
	return -1;
}

/* 1 when `password` is one whole line of the tokens file (trailing newline ignored). */
static int token_is_valid(const char *password)
{
	FILE *f = fopen(tokens_file, "r");
	if (!f) {
		mosquitto_log_printf(MOSQ_LOG_ERR, "sat_tokens_auth: cannot open %s", tokens_file);
		return 0;
	}
	size_t want = strlen(password);
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int found = 0;
	while (!found && (len = getline(&line, &cap, f)) >= 0) {
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
			line[--len] = '\0';
		}
		found = (size_t)len == want && len > 0 && memcmp(line, password, want) == 0;
	}
	free(line);
	fclose(f);
	return found;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)userdata;
	struct mosquitto_evt_basic_auth *ed = event_data;
	if (!ed->username) {
		return MOSQ_ERR_AUTH;
	}
	if (strcmp(ed->username, "$sat") != 0) {
		int sub = subscriber_username && subscriber_password && ed->password &&
			  strcmp(ed->username, subscriber_username) == 0 &&
			  strcmp(ed->password, subscriber_password) == 0;
		return sub ? MOSQ_ERR_SUCCESS : MOSQ_ERR_AUTH;
	}
	/* Never log the password: it is a token. */
	return ed->password && token_is_valid(ed->password) ? MOSQ_ERR_SUCCESS : MOSQ_ERR_AUTH;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
			  struct mosquitto_opt *opts, int opt_count)
{
	(void)userdata;
	plugin_id = identifier;
	for (int i = 0; i < opt_count; i++) {
		if (strcmp(opts[i].key, "tokens_file") == 0) {
			tokens_file = strdup(opts[i].value);
		} else if (strcmp(opts[i].key, "subscriber_username") == 0) {
			subscriber_username = strdup(opts[i].value);
		} else if (strcmp(opts[i].key, "subscriber_password") == 0) {
			subscriber_password = strdup(opts[i].value);
		}
	}
	if (!tokens_file) {
		mosquitto_log_printf(MOSQ_LOG_ERR, "sat_tokens_auth: plugin_opt_tokens_file is required");
		return MOSQ_ERR_INVAL;
	}
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
	(void)userdata;
	(void)opts;
	(void)opt_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	free(tokens_file);
	free(subscriber_username);
	free(subscriber_password);
	tokens_file = subscriber_username = subscriber_password = NULL;
	return MOSQ_ERR_SUCCESS;
}

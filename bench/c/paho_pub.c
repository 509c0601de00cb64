/*
 * paho_pub: the bench job done with Eclipse Paho C's synchronous client (MQTTClient, MQTT v5),
 * as a Paho user writes it. Compiled by `cargo xtask bench` with gcc against the Debian package
 * libpaho-mqtt-dev:  gcc -O2 -o paho-pub paho_pub.c -lpaho-mqtt3c
 *
 * Flags (same names as pod-publisher): --host --port --token-file --client-id --topic
 * --payload-prefix --qos --count --interval-ms --window.
 *
 * QoS 1: `reliable` off and maxInflightMessages = --window (default 20, mosquitto's Receive
 * Maximum). Acknowledgements are counted in the deliveryComplete callback, which makes the
 * library run its receive thread; the publishing thread waits on a condition variable while
 * the window is full (flat out) or until its message is acknowledged (at a fixed rate, as
 * Paho's sample MQTTClient_publish.c does). MQTTClient_waitForCompletion is not used: in
 * 1.3.12 it polls through MQTTClient_yield, which returns only after 100 ms, so a windowed
 * loop built on it managed about 200 messages/s.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <MQTTClient.h>

static const char *arg(int argc, char **argv, const char *name, const char *fallback)
{
	for (int i = 1; i + 1 < argc; i += 2)
		if (strcmp(argv[i], name) == 0)
			return argv[i + 1];
	return fallback;
}

static char *read_token(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "paho-pub: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	static char buf[70000];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
		n--;
	buf[n] = '\0';
	return buf;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t acked_cond = PTHREAD_COND_INITIALIZER;
static long long acked;
static int lost;

static void on_delivered(void *context, MQTTClient_deliveryToken token)
{
	(void)context;
	(void)token;
	pthread_mutex_lock(&lock);
	acked++;
	pthread_cond_signal(&acked_cond);
	pthread_mutex_unlock(&lock);
}

static int on_message(void *context, char *topic, int topic_len, MQTTClient_message *message)
{
	(void)context;
	(void)topic_len;
	MQTTClient_freeMessage(&message);
	MQTTClient_free(topic);
	return 1;
}

static void on_lost(void *context, char *cause)
{
	(void)context;
	fprintf(stderr, "paho-pub: connection lost: %s\n", cause ? cause : "?");
	pthread_mutex_lock(&lock);
	lost = 1;
	pthread_cond_signal(&acked_cond);
	pthread_mutex_unlock(&lock);
}

/* Waits until at most `in_flight` of `sent` messages are unacknowledged; 0 on success. */
static int wait_acked(long long sent, long long in_flight)
{
	int rc = 0;
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 10;
	pthread_mutex_lock(&lock);
	while (!lost && rc == 0 && sent - acked > in_flight)
		rc = pthread_cond_timedwait(&acked_cond, &lock, &deadline);
	if (lost)
		rc = -1;
	pthread_mutex_unlock(&lock);
	return rc;
}

static void sleep_until(struct timespec *deadline)
{
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, deadline, NULL) == EINTR)
		;
}

int main(int argc, char **argv)
{
	const char *host = arg(argc, argv, "--host", "127.0.0.1");
	const char *port = arg(argc, argv, "--port", "1883");
	const char *token_file = arg(argc, argv, "--token-file", "/var/run/secrets/tokens/mqtt-client-token");
	const char *client_id = arg(argc, argv, "--client-id", "paho-pub");
	const char *topic = arg(argc, argv, "--topic", "sampletopic");
	const char *prefix = arg(argc, argv, "--payload-prefix", "samplepayload");
	int qos = atoi(arg(argc, argv, "--qos", "1"));
	long long count = atoll(arg(argc, argv, "--count", "100000"));
	long interval_ms = atol(arg(argc, argv, "--interval-ms", "0"));
	int window = atoi(arg(argc, argv, "--window", "20"));
	if (window < 1)
		window = 1;

	char *token = read_token(token_file);
	if (!token)
		return 2;
	char uri[300];
	snprintf(uri, sizeof uri, "tcp://%s:%s", host, port);

	MQTTClient client;
	MQTTClient_createOptions create = MQTTClient_createOptions_initializer;
	create.MQTTVersion = MQTTVERSION_5;
	int rc = MQTTClient_createWithOptions(&client, uri, client_id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &create);
	if (rc != MQTTCLIENT_SUCCESS) {
		fprintf(stderr, "paho-pub: create failed: %d\n", rc);
		return 1;
	}
	if (qos > 0)
		MQTTClient_setCallbacks(client, NULL, on_lost, on_message, on_delivered);
	MQTTClient_connectOptions conn = MQTTClient_connectOptions_initializer5;
	conn.keepAliveInterval = 60;
	conn.cleanstart = 1;
	conn.username = "$sat";
	conn.password = token;
	conn.reliable = 0;
	conn.maxInflightMessages = window;
	MQTTResponse response = MQTTClient_connect5(client, &conn, NULL, NULL);
	if (response.reasonCode != MQTTCLIENT_SUCCESS) {
		fprintf(stderr, "paho-pub: connect failed: %d %s\n", response.reasonCode,
			MQTTClient_strerror(response.reasonCode));
		MQTTResponse_free(response);
		return 1;
	}
	MQTTResponse_free(response);

	char payload[256];
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	int failed = 0;
	long long n = 0;
	for (; n < count && !failed; n++) {
		if (interval_ms > 0) {
			sleep_until(&next);
			next.tv_nsec += (interval_ms % 1000) * 1000000L;
			next.tv_sec += interval_ms / 1000 + next.tv_nsec / 1000000000L;
			next.tv_nsec %= 1000000000L;
		}
		if (qos > 0 && wait_acked(n, window - 1) != 0) {
			fprintf(stderr, "paho-pub: no acknowledgement in time at %lld\n", n);
			failed = 1;
			break;
		}
		int len = snprintf(payload, sizeof payload, "%s%lld", prefix, n);
		MQTTClient_deliveryToken token_id = 0;
		response = MQTTClient_publish5(client, topic, len, payload, qos, 0, NULL, &token_id);
		if (response.reasonCode != MQTTCLIENT_SUCCESS) {
			fprintf(stderr, "paho-pub: publish %lld failed: %d %s\n", n, response.reasonCode,
				MQTTClient_strerror(response.reasonCode));
			failed = 1;
		}
		MQTTResponse_free(response);
		if (qos > 0 && interval_ms > 0 && !failed && wait_acked(n + 1, 0) != 0) {
			fprintf(stderr, "paho-pub: no acknowledgement in time for %lld\n", n);
			failed = 1;
		}
	}
	if (!failed && qos > 0 && wait_acked(n, 0) != 0) {
		fprintf(stderr, "paho-pub: final acknowledgements missing\n");
		failed = 1;
	}
	MQTTClient_disconnect5(client, 10000, MQTTREASONCODE_NORMAL_DISCONNECTION, NULL);
	MQTTClient_destroy(&client);
	fprintf(stderr, "paho-pub: %s, %lld sent, %lld acknowledged\n", failed ? "failed" : "done", n, acked);
	return failed ? 1 : 0;
}

/* upcert identity plugin for mosquitto 2.0 (plugin API version 5, mosquitto_plugin.h): makes the
 * certificate CN the client's username and lets a device connect only under its own client id,
 * tells the provisioning service which thing asked, delivers each reply only to the thing that
 * asked, and disconnects clients whose certificate the CRL lists. Built by
 * upcert.plugin.build_plugin(). */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define FROM_PREFIX "upcert/from/" /* device request, copied: upcert/from/<username>/<topic> */
#define TO_PREFIX "upcert/to/"     /* service reply: upcert/to/<username>/<$aws topic> */

static mosquitto_plugin_id_t *g_pid;
static char *g_admin;   /* plugin_opt_admin: the service's identity (certificate CN) */
static char *g_crlfile; /* plugin_opt_crlfile: the listener's crlfile, re-read on SIGHUP */
/* plugin_opt_claim_prefix: certificates whose CN starts with it are provisioning claims, shared by
 * a batch of boards (AWS IoT "provisioning by claim"). A claim connects under any valid client id
 * (the board's thing-to-be) and its username becomes "<client id>@<CN>", so each reply reaches
 * only the connection that asked, as on AWS, and no thing's topics match it (a thing name has no
 * '@': AWS allows [a-zA-Z0-9:_-]). */
static char *g_claim;
/* plugin_opt_claim_topics: what a claim may do, from the claim policy (upcert/policy.py
 * claim_policy, translated by topic_access): "r <topic>" and "w <topic>" entries separated by
 * ';'. A claim's username is not its CN, so acl_file's `user` sections cannot name it: this
 * plugin answers every ACL check of a claim itself, allowing these topics only. */
static char *g_claim_topics;
static X509_CRL *g_crl;

/* The reply being delivered: mosquitto queues a PUBLISH to every subscriber (read ACL check per
 * subscriber, src/subs.c subs__send) right after MOSQ_EVT_MESSAGE, in the same thread, so the
 * checks that follow a rewrite see this topic and payload (mosquitto_evt_acl_check carries both). */
static struct { char *topic; void *payload; uint32_t len; char *user; } g_reply;

/* Clients seen in ACL checks, with their certificate serial: 2.0 has no connect event, and a
 * kick needs a client id (mosquitto_kick_client_by_clientid). */
struct seen { char *id; ASN1_INTEGER *serial; bool kick; };
static struct seen *g_seen;
static size_t g_nseen, g_capseen;

static void reply_clear(void)
{
	mosquitto_free(g_reply.topic);
	mosquitto_free(g_reply.payload);
	mosquitto_free(g_reply.user);
	memset(&g_reply, 0, sizeof(g_reply));
}

static void crl_load(void)
{
	FILE *f;
	X509_CRL *crl = NULL;

	if(!g_crlfile) return;
	f = fopen(g_crlfile, "r");
	if(f){
		crl = PEM_read_X509_CRL(f, NULL, NULL, NULL);
		fclose(f);
	}
	if(!crl){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "upcert: cannot read CRL %s: keeping the last one", g_crlfile);
		return;
	}
	X509_CRL_free(g_crl);
	g_crl = crl;
}

static bool revoked(ASN1_INTEGER *serial)
{
	X509_REVOKED *entry;
	/* OpenSSL X509_CRL_get0_by_serial: 1 = listed, 2 = listed as removeFromCRL, 0 = not listed */
	return g_crl && serial && X509_CRL_get0_by_serial(g_crl, &entry, serial) == 1;
}

static struct seen *seen_find(const char *id)
{
	size_t i;
	for(i = 0; id && i < g_nseen; i++){
		if(!strcmp(g_seen[i].id, id)) return &g_seen[i];
	}
	return NULL;
}

static struct seen *seen_track(struct mosquitto *client)
{
	const char *id = mosquitto_client_id(client);
	struct seen *s = seen_find(id), *grown;
	X509 *cert;

	if(s || !id) return s;
	cert = mosquitto_client_certificate(client); /* a new reference (SSL_get_peer_certificate) */
	if(!cert) return NULL; /* offline session (queued delivery): nothing to kick */
	if(g_nseen == g_capseen){
		grown = mosquitto_realloc(g_seen, (g_capseen * 2 + 16) * sizeof(*g_seen));
		if(!grown){
			X509_free(cert);
			return NULL;
		}
		g_seen = grown;
		g_capseen = g_capseen * 2 + 16;
	}
	s = &g_seen[g_nseen];
	s->id = mosquitto_strdup(id);
	s->serial = ASN1_INTEGER_dup(X509_get0_serialNumber(cert));
	X509_free(cert);
	if(!s->id || !s->serial){
		mosquitto_free(s->id);
		ASN1_INTEGER_free(s->serial);
		return NULL;
	}
	s->kick = false;
	g_nseen++;
	return s;
}

static void seen_forget(const char *id)
{
	struct seen *s = seen_find(id);
	if(!s) return;
	mosquitto_free(s->id);
	ASN1_INTEGER_free(s->serial);
	*s = g_seen[--g_nseen];
}

/* The certificate's first subject CN as a new string (mosquitto_free), or NULL when it has none,
 * has an embedded NUL or is empty: what mosquitto's own use_identity_as_username takes (src/
 * handle_connect.c). */
static char *cert_cn(X509 *cert)
{
	X509_NAME *name = X509_get_subject_name(cert);
	X509_NAME_ENTRY *entry;
	ASN1_STRING *data;
	char *cn;
	int i;

	if(!name) return NULL;
	i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	if(i < 0) return NULL;
	entry = X509_NAME_get_entry(name, i);
	data = entry ? X509_NAME_ENTRY_get_data(entry) : NULL;
	if(!data || ASN1_STRING_length(data) <= 0) return NULL;
	cn = mosquitto_strdup((const char *)ASN1_STRING_get0_data(data));
	if(cn && strlen(cn) != (size_t)ASN1_STRING_length(data)){
		mosquitto_free(cn);
		return NULL;
	}
	return cn;
}

static bool name_ok(const char *user);

/* A claim's username "<client id>@<CN>"; MOSQ_ERR_AUTH for a client id no thing could have. */
static int claim_username(struct mosquitto *client, const char *id, const char *cn)
{
	size_t len;
	char *user;
	int rc;

	if(!id || !*id || !name_ok(id) || strchr(id, '@')){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "upcert: claim '%s' refused: client id '%s' is not a thing name", cn, id ? id : "");
		return MOSQ_ERR_AUTH;
	}
	len = strlen(id) + 1 + strlen(cn) + 1;
	user = mosquitto_malloc(len);
	if(!user) return MOSQ_ERR_AUTH;
	snprintf(user, len, "%s@%s", id, cn);
	rc = mosquitto_set_username(client, user);
	mosquitto_free(user);
	return rc == MOSQ_ERR_SUCCESS ? MOSQ_ERR_SUCCESS : MOSQ_ERR_AUTH;
}

/* CONNECT, before mosquitto looks for a connected client with the same id: with
 * use_identity_as_username mosquitto 2.0 calls no plugin at CONNECT at all, and a second CONNECT
 * under a connected client's id closes that client ("already connected, closing old connection",
 * src/handle_connect.c connect__on_authorised). So mosquitto.conf leaves that option out and this
 * does its work: username := certificate CN (whatever username the client sent), and a device
 * (any CN but the admin's) may connect only as client id = CN, like AWS's policy allowing
 * iot:Connect on client/${iot:Connection.Thing.ThingName}. MOSQ_ERR_AUTH makes mosquitto answer
 * CONNACK 5 (MQTT 5: 0x87 Not authorized) and drop only the new connection. */
static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *id = mosquitto_client_id(ed->client);
	X509 *cert;
	char *cn;
	int rc;

	(void)event; (void)userdata;
	cert = mosquitto_client_certificate(ed->client); /* a new reference */
	if(!cert){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "upcert: client %s refused: no client certificate", id ? id : "?");
		return MOSQ_ERR_AUTH;
	}
	cn = cert_cn(cert);
	X509_free(cert);
	if(!cn){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "upcert: client %s refused: its certificate has no usable subject CN", id ? id : "?");
		return MOSQ_ERR_AUTH;
	}
	if(g_claim && *g_claim && !strncmp(cn, g_claim, strlen(g_claim))){
		rc = claim_username(ed->client, id, cn);
		mosquitto_free(cn);
		return rc;
	}
	if(strcmp(cn, g_admin) && (!id || strcmp(id, cn))){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "upcert: client id '%s' refused for certificate CN '%s': "
				"a thing connects only under its own name as client id (AWS policy: iot:Connect on "
				"client/${iot:Connection.Thing.ThingName})", id ? id : "", cn);
		mosquitto_free(cn);
		return MOSQ_ERR_AUTH;
	}
	rc = mosquitto_set_username(ed->client, cn); /* copies it; replaces what the client sent */
	mosquitto_free(cn);
	return rc == MOSQ_ERR_SUCCESS ? MOSQ_ERR_SUCCESS : MOSQ_ERR_AUTH;
}

static bool name_ok(const char *user)
{
	return user && *user && !strpbrk(user, "/+#");
}

/* A device request the service answers: fleet provisioning, or jobs of the device's own thing. */
static bool is_request(const char *topic, const char *user)
{
	size_t n = strlen(user);
	if(!strncmp(topic, "$aws/certificates/", 18)) return true;
	if(!strncmp(topic, "$aws/provisioning-templates/", 28)) return true;
	return !strncmp(topic, "$aws/things/", 12) && !strncmp(topic + 12, user, n)
		&& !strncmp(topic + 12 + n, "/jobs/", 6);
}

static int copy_request(struct mosquitto_evt_message *ed, const char *user)
{
	size_t len = strlen(FROM_PREFIX) + strlen(user) + 1 + strlen(ed->topic) + 1;
	char *topic = mosquitto_malloc(len);
	int rc;

	if(!topic) return MOSQ_ERR_NOMEM;
	snprintf(topic, len, "%s%s/%s", FROM_PREFIX, user, ed->topic);
	/* the original goes on unchanged; the copy is queued for the next loop (src/loop.c) */
	rc = mosquitto_broker_publish_copy(NULL, topic, (int)ed->payloadlen, ed->payload, ed->qos, false, NULL);
	mosquitto_free(topic);
	return rc;
}

static int route_reply(struct mosquitto_evt_message *ed)
{
	const char *user = ed->topic + strlen(TO_PREFIX);
	const char *slash = strchr(user, '/');
	char *topic;

	if(!slash || slash == user || strncmp(slash + 1, "$aws/", 5)){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "upcert: dropped %s: want %s<thing>/$aws/...", ed->topic, TO_PREFIX);
		return MOSQ_ERR_ACL_DENIED;
	}
	topic = mosquitto_strdup(slash + 1);
	g_reply.user = mosquitto_malloc((size_t)(slash - user) + 1);
	g_reply.topic = mosquitto_strdup(slash + 1);
	g_reply.payload = mosquitto_malloc(ed->payloadlen + 1);
	if(!topic || !g_reply.user || !g_reply.topic || !g_reply.payload){
		mosquitto_free(topic);
		reply_clear();
		return MOSQ_ERR_NOMEM;
	}
	memcpy(g_reply.user, user, (size_t)(slash - user));
	g_reply.user[slash - user] = '\0';
	if(ed->payloadlen) memcpy(g_reply.payload, ed->payload, ed->payloadlen);
	g_reply.len = ed->payloadlen;
	/* mosquitto takes ed->topic as the stored topic and does not free the old one (src/plugin.c
	 * plugin__handle_message), so this callback frees it. Replies are never retained. */
	mosquitto_free(ed->topic);
	ed->topic = topic;
	ed->retain = false;
	return MOSQ_ERR_SUCCESS;
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	const char *user = mosquitto_client_username(ed->client);

	(void)event; (void)userdata;
	reply_clear();
	if(!user) return MOSQ_ERR_SUCCESS;
	if(!strcmp(user, g_admin)){
		return strncmp(ed->topic, TO_PREFIX, strlen(TO_PREFIX)) ? MOSQ_ERR_SUCCESS : route_reply(ed);
	}
	if(!is_request(ed->topic, user)) return MOSQ_ERR_SUCCESS;
	if(!name_ok(user)){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "upcert: request from '%s' ignored: a thing name has no / + #", user);
		return MOSQ_ERR_SUCCESS;
	}
	return copy_request(ed, user);
}

static bool is_claim(const char *user)
{
	const char *at = user ? strchr(user, '@') : NULL;
	return at && g_claim && *g_claim && !strncmp(at + 1, g_claim, strlen(g_claim));
}

/* The claim policy: allowed when `topic` is one of g_claim_topics with that access (a
 * subscription needs read; exact topics only: the claim policy names no wildcard). */
static int claim_acl(int access, const char *topic)
{
	const char *p = g_claim_topics;
	size_t n = strlen(topic);
	char want = (access & MOSQ_ACL_WRITE) ? 'w' : 'r';

	if(access == MOSQ_ACL_UNSUBSCRIBE) return MOSQ_ERR_SUCCESS;
	while(p && *p){
		const char *end = strchr(p, ';');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if(len == n + 2 && p[0] == want && p[1] == ' ' && !strncmp(p + 2, topic, n)){
			return MOSQ_ERR_SUCCESS;
		}
		p = end ? end + 1 : NULL;
	}
	return MOSQ_ERR_ACL_DENIED;
}

/* Returns MOSQ_ERR_PLUGIN_DEFER to let acl_file decide (src/security.c mosquitto_acl_check: the
 * first callback that does not defer wins; this plugin registers before acl_file's). */
static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const char *user = mosquitto_client_username(ed->client);
	struct seen *s;

	(void)event; (void)userdata;
	if(user && strcmp(user, g_admin)){
		s = seen_track(ed->client);
		if(s && revoked(s->serial)){
			s->kick = true; /* kicked in the next tick, not inside the broker's own loop */
			return MOSQ_ERR_ACL_DENIED;
		}
	}
	if(ed->access == MOSQ_ACL_READ && g_reply.topic && !strcmp(ed->topic, g_reply.topic)
			&& ed->payloadlen == g_reply.len
			&& (!g_reply.len || !memcmp(ed->payload, g_reply.payload, g_reply.len))){
		if(!user || strcmp(user, g_reply.user)) return MOSQ_ERR_ACL_DENIED;
	}
	return is_claim(user) ? claim_acl(ed->access, ed->topic) : MOSQ_ERR_PLUGIN_DEFER;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	size_t i;

	(void)event; (void)event_data; (void)userdata;
	crl_load(); /* mosquitto reloads the listener's crlfile on SIGHUP too (security_default.c) */
	for(i = 0; i < g_nseen; i++){
		if(revoked(g_seen[i].serial)) g_seen[i].kick = true;
	}
	return MOSQ_ERR_PLUGIN_DEFER; /* a non-defer result would end the reload callbacks */
}

static int on_tick(int event, void *event_data, void *userdata)
{
	size_t i;
	char *id;

	(void)event; (void)event_data; (void)userdata;
	for(i = 0; i < g_nseen; i++){
		if(!g_seen[i].kick) continue;
		g_seen[i].kick = false;
		id = mosquitto_strdup(g_seen[i].id); /* the kick's DISCONNECT event edits g_seen */
		if(!id) return MOSQ_ERR_NOMEM;
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "upcert: client %s uses a certificate listed in the CRL: disconnecting", id);
		mosquitto_kick_client_by_clientid(id, false);
		mosquitto_free(id);
		i = (size_t)-1; /* start again: the table changed */
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;

	(void)event; (void)userdata;
	seen_forget(mosquitto_client_id(ed->client));
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;
	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *opts, int opt_count)
{
	int i;

	(void)userdata;
	g_pid = identifier;
	for(i = 0; i < opt_count; i++){
		if(!strcmp(opts[i].key, "admin")) g_admin = mosquitto_strdup(opts[i].value);
		if(!strcmp(opts[i].key, "crlfile")) g_crlfile = mosquitto_strdup(opts[i].value);
		if(!strcmp(opts[i].key, "claim_prefix")) g_claim = mosquitto_strdup(opts[i].value);
		if(!strcmp(opts[i].key, "claim_topics")) g_claim_topics = mosquitto_strdup(opts[i].value);
	}
	if(!g_admin) g_admin = mosquitto_strdup("upcert-admin");
	if(!g_admin) return MOSQ_ERR_NOMEM;
	crl_load();
	mosquitto_log_printf(MOSQ_LOG_INFO, "upcert: identity plugin for service '%s', CRL %s", g_admin,
			g_crlfile ? g_crlfile : "(none)");
	if(mosquitto_callback_register(g_pid, MOSQ_EVT_MESSAGE, on_message, NULL, NULL)
			|| mosquitto_callback_register(g_pid, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL)
			|| mosquitto_callback_register(g_pid, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL)
			|| mosquitto_callback_register(g_pid, MOSQ_EVT_RELOAD, on_reload, NULL, NULL)
			|| mosquitto_callback_register(g_pid, MOSQ_EVT_TICK, on_tick, NULL, NULL)
			|| mosquitto_callback_register(g_pid, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL)){
		return MOSQ_ERR_UNKNOWN;
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
	(void)userdata; (void)opts; (void)opt_count;
	mosquitto_callback_unregister(g_pid, MOSQ_EVT_MESSAGE, on_message, NULL);
	mosquitto_callback_unregister(g_pid, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(g_pid, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_callback_unregister(g_pid, MOSQ_EVT_RELOAD, on_reload, NULL);
	mosquitto_callback_unregister(g_pid, MOSQ_EVT_TICK, on_tick, NULL);
	mosquitto_callback_unregister(g_pid, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
	reply_clear();
	while(g_nseen) seen_forget(g_seen[0].id);
	mosquitto_free(g_seen);
	X509_CRL_free(g_crl);
	mosquitto_free(g_admin);
	mosquitto_free(g_crlfile);
	mosquitto_free(g_claim);
	mosquitto_free(g_claim_topics);
	g_claim = g_claim_topics = NULL;
	return MOSQ_ERR_SUCCESS;
}

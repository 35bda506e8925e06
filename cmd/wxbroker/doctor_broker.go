package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/wechat"
)

// doctorTimeout bounds each network probe of doctor.
const doctorTimeout = 5 * time.Second

// probeAppID is an AppID no account has: WeChat answers it with 40013
// without touching any quota or token, which proves the endpoint is WeChat
// and reachable.
const probeAppID = "wx0000000000000000"

// brokerChecks are doctor's checks of Redis, the leader and WeChat. None of
// them writes to Redis or fetches a token.
func brokerChecks(cfg *config.Config) []check {
	return []check{
		{name: "redis", run: func(ctx context.Context) []finding { return checkRedisAndLeader(ctx, cfg) }},
		{name: "wechat", run: func(ctx context.Context) []finding { return checkWeChat(ctx, cfg) }},
	}
}

func checkRedisAndLeader(ctx context.Context, cfg *config.Config) []finding {
	rdb := newRedis(cfg.Redis)
	defer func() { _ = rdb.Close() }()
	ctx, cancel := context.WithTimeout(ctx, doctorTimeout)
	defer cancel()
	addrs := strings.Join(cfg.Redis.Addrs, ",")
	if err := rdb.Ping(ctx).Err(); err != nil {
		return []finding{{Severity: sevFail, Check: "redis", Message: fmt.Sprintf("cannot reach Redis at %s: %v", addrs, err),
			Fix: redisFix(err)}}
	}
	out := []finding{{Severity: sevOK, Check: "redis", Message: "reachable at " + addrs}}
	if len(cfg.Components()) > 0 {
		out = append(out, persistenceFinding(ctx, rdb))
	}
	st, err := broker.Inspect(ctx, rdb, cfg)
	if err != nil {
		return append(out, finding{Severity: sevFail, Check: "leader", Message: fmt.Sprintf("cannot read the broker state: %v", err),
			Fix: "check that redis.key_prefix matches the running brokers and that the Redis user may read it"})
	}
	return append(out, statusFindings(st)...)
}

// configGetter is the one Redis command persistenceFinding sends.
type configGetter interface {
	ConfigGet(ctx context.Context, parameter string) *redis.MapStringStringCmd
}

// persistenceFinding warns when Redis keeps no persistence (appendonly no
// and no save schedule) while components are configured: authorizer
// refresh tokens are the one credential the broker cannot fetch again, and
// a restart of such a Redis loses every one (the leader recovers those
// api_get_authorizer_list still returns).
func persistenceFinding(ctx context.Context, rdb configGetter) finding {
	aof, err1 := rdb.ConfigGet(ctx, "appendonly").Result()
	save, err2 := rdb.ConfigGet(ctx, "save").Result()
	if err := errors.Join(err1, err2); err != nil {
		return finding{Severity: sevWarn, Check: "redis", Message: fmt.Sprintf("cannot read Redis persistence settings (CONFIG GET): %v", err),
			Fix: "make sure Redis keeps its data (appendonly yes, or a save schedule): it holds the authorizer refresh tokens"}
	}
	if aof["appendonly"] == "yes" || strings.TrimSpace(save["save"]) != "" {
		return finding{Severity: sevOK, Check: "redis", Message: fmt.Sprintf("keeps its data across a restart (appendonly %s, save %q)", aof["appendonly"], save["save"])}
	}
	return finding{Severity: sevWarn, Check: "redis", Message: "keeps no persistence (appendonly no, no save): a restart loses every authorizer refresh token",
		Fix: "set appendonly yes (or a save schedule) on Redis and its replicas; see docs/OPEN_PLATFORM.md#durability"}
}

func redisFix(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "NOAUTH"), strings.Contains(msg, "WRONGPASS"), strings.Contains(msg, "invalid password"):
		return "check redis.username and redis.password (or password_file)"
	case errors.Is(err, context.DeadlineExceeded):
		return "Redis did not answer within " + doctorTimeout.String() + ": check the address, firewalls and TLS"
	default:
		return "check redis.addrs (and master_name for Sentinel) and that Redis runs"
	}
}

func checkWeChat(ctx context.Context, cfg *config.Config) []finding {
	var out []finding
	for _, base := range append([]string{cfg.WeChat.BaseURL}, cfg.WeChat.FallbackURLs...) {
		out = append(out, probeWeChat(ctx, base, cfg.WeChat.Timeout))
	}
	return out
}

// probeWeChat asks base for a token of an AppID that does not exist. A JSON
// errcode answer proves reachability; nothing is fetched, no token of a real
// app is touched and no quota is used.
func probeWeChat(ctx context.Context, rawBase string, timeout time.Duration) finding {
	c, err := wechat.New(wechat.Options{BaseURL: rawBase, Timeout: timeout})
	// Every message shows the URL redacted: it may carry proxy credentials.
	base := config.RedactURL(rawBase)
	if err != nil {
		return finding{Severity: sevFail, Check: "wechat", Message: fmt.Sprintf("%s: %v", base, err), Fix: "fix wechat.base_url / fallback_urls"}
	}
	ctx, cancel := context.WithTimeout(ctx, doctorTimeout)
	defer cancel()
	start := time.Now()
	_, err = c.Token(ctx, probeAppID, "wxbroker-doctor-probe")
	rtt := time.Since(start).Round(time.Millisecond)
	var ae *wechat.APIError
	switch {
	case errors.As(err, &ae) && ae.Code == 40013:
		return finding{Severity: sevOK, Check: "wechat", Message: fmt.Sprintf("%s answers (probe with a non-existent appid: errcode 40013 as expected, %s)", base, rtt)}
	case errors.As(err, &ae):
		h := ae.Hint()
		return finding{Severity: sevWarn, Check: "wechat",
			Message: fmt.Sprintf("%s answers, but with errcode %d to a non-existent appid (%s, %s)", base, ae.Code, h.EN, rtt),
			Fix:     h.FixEN}
	case err == nil:
		return finding{Severity: sevWarn, Check: "wechat",
			Message: base + " handed out a token for a non-existent appid: it is not WeChat (a simulator or a proxy?)",
			Fix:     "point wechat.base_url at https://api.weixin.qq.com or at a proxy that forwards to it"}
	default:
		return finding{Severity: sevFail, Check: "wechat", Message: fmt.Sprintf("cannot reach %s: %v", base, err),
			Fix: "check DNS, egress firewall and proxy settings (HTTPS_PROXY) for api.weixin.qq.com; wechat.timeout is " + timeout.String()}
	}
}

// statusFindings reports the leader and, per app, the stored credentials and
// their last refresh error with its hint.
func statusFindings(st broker.Status) []finding {
	var out []finding
	if st.LeaderID == "" {
		out = append(out, finding{Severity: sevWarn, Check: "leader",
			Message: fmt.Sprintf("no broker holds the leader lock (last epoch %d)", st.Epoch),
			Fix:     "start wxbroker serve (or check why every replica lost Redis); nothing refreshes tokens without a leader"})
	} else {
		out = append(out, finding{Severity: sevOK, Check: "leader", Message: fmt.Sprintf("%s leads at epoch %d", st.LeaderID, st.Epoch)})
	}
	for _, app := range st.Apps {
		for _, c := range append([]broker.CredentialStatus{app.AccessToken}, app.Tickets...) {
			out = append(out, credentialFinding(app, c))
		}
	}
	return out
}

func credentialFinding(app broker.AppStatus, c broker.CredentialStatus) finding {
	name := app.Namespace + "/" + app.AppID + " " + c.Kind
	var calls int64
	for _, n := range app.FetchesToday {
		calls += n
	}
	if e := c.LastError; e != nil {
		f := finding{Severity: sevWarn, Check: "app", Message: fmt.Sprintf("%s: last refresh failed at %s: %s",
			name, e.At.UTC().Format(time.RFC3339), e.Message)}
		if e.Errcode != 0 {
			f.Message += fmt.Sprintf(" (errcode %d", e.Errcode)
			if e.RID != "" {
				f.Message += ", rid " + e.RID
			}
			f.Message += ")"
		}
		if c.RetriesStopped || !c.Valid {
			f.Severity = sevFail
		}
		if e.Hint != nil {
			f.Message += "; " + e.Hint.EN
			f.Fix = e.Hint.FixEN
		}
		if f.Fix == "" {
			f.Fix = "see wxbroker explain ERRCODE and the broker's log"
		}
		if c.RetriesStopped {
			f.Fix += " (retries stopped until the configuration is fixed)"
		}
		return f
	}
	if !c.Valid {
		return finding{Severity: sevWarn, Check: "app", Message: name + ": no valid credential stored",
			Fix: "start a broker, or wait for the leader's first refresh"}
	}
	return finding{Severity: sevOK, Check: "app", Message: fmt.Sprintf("%s: valid, generation %d, expires in %ds, %d credential call(s) today",
		name, c.Generation, c.ExpiresIn, calls)}
}

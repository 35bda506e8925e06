package broker

import (
	"context"
	"errors"
	"time"

	"github.com/wxbroker/wxbroker/config"
)

// Roles in Status.
const (
	RoleLeader  = "leader"
	RoleStandby = "standby"
	RoleInspect = "inspect" // Inspect: read from Redis, no broker running
)

// Status is a JSON-serialisable view of the broker for operators. It never
// contains a token or a secret (tokens appear as a short sha256 prefix).
type Status struct {
	InstanceID string      `json:"instance_id,omitempty"`
	Role       string      `json:"role"`
	LeaderID   string      `json:"leader_id"`
	Epoch      int64       `json:"epoch"`
	Redis      RedisStatus `json:"redis"`
	Apps       []AppStatus `json:"apps"`
}

// RedisStatus says whether Redis answered.
type RedisStatus struct {
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
	Since time.Time `json:"since,omitzero"` // when the outage began
}

// AppStatus is one configured app.
type AppStatus struct {
	Namespace    string             `json:"namespace"`
	AppID        string             `json:"appid"`
	Kind         string             `json:"kind"`
	TokenMode    string             `json:"token_mode"`
	AccessToken  CredentialStatus   `json:"access_token"`
	Tickets      []CredentialStatus `json:"tickets,omitempty"`
	FetchesToday map[string]int64   `json:"fetches_today"` // credential calls per API on the current UTC+8 day
	ForcedToday  int64              `json:"forced_today"`  // invalidation-triggered fetches today (force_daily_cap)
}

// CredentialStatus is an access token or a ticket.
type CredentialStatus struct {
	Kind           string     `json:"kind"`
	Valid          bool       `json:"valid"`
	Generation     int64      `json:"generation"`
	ExpiresIn      int64      `json:"expires_in"` // whole seconds left; 0 when expired or absent
	ExpiresAt      time.Time  `json:"expires_at,omitzero"`
	TokenSHA256    string     `json:"token_sha256,omitempty"` // first 12 hex digits, never the token
	LastRefresh    time.Time  `json:"last_refresh,omitzero"`
	LastError      *ErrorInfo `json:"last_error,omitempty"`
	RetriesStopped bool       `json:"retries_stopped,omitempty"`
	NextAttempt    time.Time  `json:"next_attempt,omitzero"`
}

// Status reports this replica's view: role, leader, epoch, Redis state and,
// per app, the cached credentials with the leader's last refresh outcome and
// today's call counts. Parts that need Redis are left out while it is down.
func (b *Broker) Status(ctx context.Context) Status {
	st := Status{InstanceID: b.id, Role: RoleStandby}
	if b.IsLeader() {
		st.Role = RoleLeader
	}
	if id := b.el.leaderID.Load(); id != nil {
		st.LeaderID = *id
	}
	st.Epoch = b.el.epoch.Load()
	cat := b.catalog()
	snap, err := b.store.gather(ctx, cat.cfg, b.now())
	b.setRedis(err)
	if err == nil {
		st.LeaderID, st.Epoch = snap.leader, snap.epoch
		b.el.noteEpoch(snap.epoch)
	}
	st.Redis = RedisStatus{OK: true}
	if rs := b.redisErr.Load(); rs != nil && rs.err != nil {
		st.Redis = RedisStatus{Error: rs.err.Error(), Since: rs.at.UTC()}
	}
	if !st.Redis.OK && st.Role == RoleLeader {
		st.Role = RoleStandby
	}
	now := b.now()
	for _, ns := range cat.namespaces {
		for _, a := range cat.cfg.Namespaces[ns].Apps {
			if a == nil {
				continue
			}
			e, ok := cat.entry(ns, a.AppID)
			if !ok {
				continue
			}
			as := appStatus(ns, a, snap)
			as.AccessToken = b.credStatus(e.token, snap, now)
			for _, typ := range a.Tickets {
				if it, ok := e.tickets[typ]; ok {
					as.Tickets = append(as.Tickets, b.credStatus(it, snap, now))
				}
			}
			st.Apps = append(st.Apps, as)
		}
	}
	return st
}

func (b *Broker) credStatus(it *item, snap *snapshot, now time.Time) CredentialStatus {
	rs := it.status.Load()
	if snap != nil {
		if r := snap.status[it.ns][it.field]; r != nil {
			rs = r
		}
	}
	return credentialStatus(it.kind, it.cur.Load(), rs, now)
}

func credentialStatus(kind string, rec *record, rs *refreshStatus, now time.Time) CredentialStatus {
	cs := CredentialStatus{Kind: kind}
	if rec != nil {
		cs.Generation = rec.Gen
		cs.ExpiresAt = rec.ExpiresAt.UTC()
		cs.TokenSHA256 = shortHash(rec.Value)
		cs.LastRefresh = rec.FetchedAt.UTC()
		if now.Before(rec.ExpiresAt) {
			cs.Valid = true
			cs.ExpiresIn = int64(rec.ExpiresAt.Sub(now) / time.Second)
		}
	}
	if rs != nil {
		if !rs.LastRefresh.IsZero() {
			cs.LastRefresh = rs.LastRefresh.UTC()
		}
		cs.LastError, cs.RetriesStopped, cs.NextAttempt = rs.LastError, rs.RetriesStopped, rs.NextAttempt
	}
	return cs
}

func appStatus(ns string, a *config.App, snap *snapshot) AppStatus {
	as := AppStatus{Namespace: ns, AppID: a.AppID, Kind: a.Kind, TokenMode: a.TokenMode, FetchesToday: map[string]int64{}}
	if snap != nil {
		for api, n := range snap.quota[ns+"/"+a.AppID] {
			as.FetchesToday[api] = n
		}
		as.ForcedToday = snap.forced[ns+"/"+a.AppID]
	}
	return as
}

// Inspect reads the shared state from Redis without running a broker (for
// `wxbroker doctor`). It fails only when Redis cannot be read.
func Inspect(ctx context.Context, rdb RedisClient, cfg *config.Config) (Status, error) {
	if rdb == nil || cfg == nil {
		return Status{}, errors.New("broker: Inspect needs a Redis client and a config")
	}
	now := time.Now()
	snap, err := newStore(rdb, cfg.Redis.KeyPrefix, configuredNamespaces(cfg), nil).gather(ctx, cfg, now)
	if err != nil {
		return Status{Role: RoleInspect, Redis: RedisStatus{Error: err.Error(), Since: now.UTC()}}, err
	}
	st := Status{Role: RoleInspect, LeaderID: snap.leader, Epoch: snap.epoch, Redis: RedisStatus{OK: true}}
	for _, ns := range cfg.NamespaceNames() {
		if cfg.Namespaces[ns] == nil {
			continue
		}
		for _, a := range cfg.Namespaces[ns].Apps {
			if a == nil {
				continue
			}
			as := appStatus(ns, a, snap)
			field := a.AppID + "/" + KindAccessToken
			as.AccessToken = credentialStatus(KindAccessToken, snap.records[ns][field], snap.status[ns][field], now)
			for _, typ := range a.Tickets {
				k, ok := ticketKind(typ)
				if !ok {
					continue
				}
				f := a.AppID + "/" + k.Name()
				as.Tickets = append(as.Tickets, credentialStatus(k.Name(), snap.records[ns][f], snap.status[ns][f], now))
			}
			st.Apps = append(st.Apps, as)
		}
	}
	return st, nil
}

package api

import (
	"container/list"
	"net"
	"sync"
	"time"
)

// repeatWindow is how soon a second fetch of the same app's token by the
// same caller on the WeChat-compatible routes, answered with the same token,
// is read as that SDK's retry after WeChat rejected the token (errcode
// 40001): SDKs ask for a new token at once when a call fails that way. The
// report this infers carries no proof, so the broker checks the token with
// WeChat before spending a refresh on it, and one "still accepted" verdict
// answers every report of that token made up to a second after it, on
// every replica: a burst of ordinary fetches (many workers of one service
// starting on one host) costs one cheap check and changes nothing, and even
// a caller that fetches on every request costs at most about one check a
// second per app (it shows in wxbroker_false_reports_total{source="compat"}).
const repeatWindow = 10 * time.Second

// maxHandouts bounds the memory of handouts: beyond it the least recently
// served caller is forgotten (its next repeat is not recognised, and a
// force_refresh from it reports the current token instead).
const maxHandouts = 16384

// callerApp names one caller of one app: the client key's name and the
// remote IP (not the port: an SDK opens new connections freely). Services
// behind one NAT address share an entry, which can only make a repeat more
// likely to be seen, never spend a refresh without a check.
type callerApp struct {
	client, ip, ns, appid string
}

// handout is the token last served to one caller for one app.
type handout struct {
	key   callerApp
	token string
	at    time.Time
}

// handouts remembers what the compatible routes handed out, per caller and
// app, in an LRU bounded by maxHandouts. It is safe for concurrent use.
type handouts struct {
	mu  sync.Mutex
	max int
	m   map[callerApp]*list.Element // → *handout
	lru list.List                   // front: most recently served
}

func newHandouts(max int) *handouts {
	return &handouts{max: max, m: make(map[callerApp]*list.Element)}
}

// last returns a copy of the caller's last handout.
func (h *handouts) last(k callerApp) (handout, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.m[k]
	if !ok {
		return handout{}, false
	}
	return *e.Value.(*handout), true
}

// put records a handout, evicting the least recently served caller when full.
func (h *handouts) put(v handout) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e, ok := h.m[v.key]; ok {
		*e.Value.(*handout) = v
		h.lru.MoveToFront(e)
		return
	}
	if h.lru.Len() >= h.max {
		if old := h.lru.Back(); old != nil {
			delete(h.m, old.Value.(*handout).key)
			h.lru.Remove(old)
		}
	}
	c := v
	h.m[v.key] = h.lru.PushFront(&c)
}

// remoteIP is the host part of a request's RemoteAddr (the connection's
// peer: forwarding headers are not trusted for this).
func remoteIP(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	return host
}

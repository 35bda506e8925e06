package wechattest

import "time"

// Fault describes how the simulator misbehaves for a call. Latency combines
// with any one of the other behaviours; when several of those are set, the
// first in field order wins.
type Fault struct {
	// Latency delays the answer. The delay ends early, without an answer,
	// when the request is cancelled.
	Latency time.Duration
	// Status, e.g. 502, answers with this HTTP status and an HTML body, as a
	// gateway in front of WeChat does (200 gives an HTML page with status
	// 200).
	Status int
	// InvalidJSON answers 200 with a truncated JSON body.
	InvalidJSON bool
	// Errcode, e.g. -1, 45009 or 40001, answers
	// {"errcode":N,"errmsg":"… rid: …"} without processing the request.
	Errcode int
	// Drop closes the connection without processing the request.
	Drop bool
	// DropResponse processes the request (e.g. mints a token, which
	// supersedes the previous one) and then closes the connection without
	// answering: the caller cannot know the outcome.
	DropResponse bool
}

// faultEntry is a fault queued for the next n calls of an API.
type faultEntry struct {
	f Fault
	n int
}

// Fail makes the next n calls of api (an API name such as "stable_token",
// "token" or "generic", equal to the wechat.API* constants) misbehave as f.
// Faults queued for the same API apply one after the other. Every faulted
// call still counts in Calls. n <= 0 does nothing.
func (s *Sim) Fail(api string, n int, f Fault) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[api] = append(s.faults[api], &faultEntry{f: f, n: n})
}

// ClearFaults drops every queued fault.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = make(map[string][]*faultEntry)
}

// takeFault consumes one call's worth of the first fault queued for api.
// Callers hold s.mu.
func (s *Sim) takeFault(api string) (Fault, bool) {
	q := s.faults[api]
	if len(q) == 0 {
		return Fault{}, false
	}
	e := q[0]
	e.n--
	if e.n <= 0 {
		q = q[1:]
		if len(q) == 0 {
			delete(s.faults, api)
		} else {
			s.faults[api] = q
		}
	}
	return e.f, true
}

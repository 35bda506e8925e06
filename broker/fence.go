package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Every write the leader makes is one of these scripts. Each first checks,
// atomically with the write, that the lock still holds this leader's value and
// that the epoch key still holds this leader's epoch (INCR hands out a higher
// one to every new leader), so a deposed leader cannot overwrite anything.

// fenceLua is the common preamble: KEYS[1] lock, KEYS[2] epoch, ARGV[1] lock
// value, ARGV[2] epoch.
const fenceLua = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return {-1, 0, 0}
end
`

// writeRecordLua stores a token or ticket record and publishes it.
// KEYS[3] token hash, KEYS[4] revision key, KEYS[5] intent hash; ARGV[3]
// namespace, ARGV[4] field, ARGV[5] generation known to the leader, ARGV[6]
// "1" when the value is unchanged, ARGV[7] "value\texp\tat\tsrc", ARGV[8]
// events channel, ARGV[9] the intent field this write settles ("" when it
// settles none: it stores what a credential call returned).
// Access tokens also pass KEYS[6] {p}:ns:<ns>:issued:<hash>, ARGV[10] its TTL in ms
// ("0": none) and ARGV[11] the expiry in unix ms (see issued.go).
const writeRecordLua = fenceLua + `
if ARGV[9] ~= '' then redis.call('HDEL', KEYS[5], ARGV[9]) end
local gen = tonumber(ARGV[5])
local old = redis.call('HGET', KEYS[3], ARGV[4])
if old then
  local og = tonumber(string.match(old, '^%d+\t(%d+)\t'))
  if og and og > gen then gen = og end
end
if ARGV[6] ~= '1' then gen = gen + 1 end
local t = redis.call('TIME')
local rev = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[4]) or '0')
if rev <= last then rev = last + 1 end
local revs = string.format('%d', rev)
redis.call('SET', KEYS[4], revs)
local rec = revs .. '\t' .. string.format('%d', gen) .. '\t' .. ARGV[7]
redis.call('HSET', KEYS[3], ARGV[4], rec)
if KEYS[6] and tonumber(ARGV[10]) > 0 then
  redis.call('SET', KEYS[6], ARGV[3] .. '\t' .. ARGV[4] .. '\t' .. ARGV[11], 'PX', ARGV[10])
end
redis.call('PUBLISH', ARGV[8], ARGV[3] .. '\t' .. ARGV[4] .. '\t' .. rec)
return {1, gen, rev}
`

// writeStatusLua stores an item's refresh status. KEYS[3] status hash;
// ARGV[3] field, ARGV[4] JSON.
const writeStatusLua = fenceLua + `
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
return {1, 0, 0}
`

type scripts struct {
	writeRecord, preCall, writeStatus, clearIntent, takeEpoch *redis.Script
}

func newScripts() scripts {
	return scripts{
		writeRecord: redis.NewScript(writeRecordLua),
		preCall:     redis.NewScript(preCallLua),
		writeStatus: redis.NewScript(writeStatusLua),
		clearIntent: redis.NewScript(clearIntentLua),
		takeEpoch:   redis.NewScript(takeEpochLua),
	}
}

// Outcomes of the fenced scripts.
var (
	errFenced        = errors.New("broker: fenced: lock or epoch changed hands")
	errForceInterval = fmt.Errorf("%w: force_min_interval not elapsed", ErrForceLimited)
	errForceCap      = fmt.Errorf("%w: force_daily_cap reached", ErrForceLimited)
)

// fence identifies the leadership a write belongs to.
type fence struct {
	lockValue string
	epoch     string
}

// runFenced runs a fenced script and returns its three numbers.
func (b *Broker) runFenced(ctx context.Context, s *redis.Script, f fence, keys []string, args ...any) ([3]int64, error) {
	var out [3]int64
	all := append([]any{f.lockValue, f.epoch}, args...)
	res, err := s.Run(ctx, b.rdb, keys, all...).Result()
	b.setRedis(err)
	if err != nil {
		return out, err
	}
	vals, ok := res.([]any)
	if !ok || len(vals) != 3 {
		return out, fmt.Errorf("unexpected script reply %T", res)
	}
	for i, v := range vals {
		n, ok := v.(int64)
		if !ok {
			return out, fmt.Errorf("unexpected script reply element %T", v)
		}
		out[i] = n
	}
	if out[0] == -1 {
		return out, errFenced
	}
	return out, nil
}

// writeRecord stores a new record for it under fence f. sameValue keeps the
// generation (a changed expiry of the same token); curGen is the generation
// the leader knows, so a Redis that lost its data does not restart the count.
func (b *Broker) writeRecord(ctx context.Context, f fence, it *item, value string, exp, at time.Time, src string, sameValue bool, curGen int64) (*record, error) {
	return b.writeRecordSettling(ctx, f, it, value, exp, at, src, sameValue, curGen, false)
}

// writeRecordSettling is writeRecord that, with settles set, also removes the
// access token's credential-call intent in the same script: the record is
// what the recorded call returned.
func (b *Broker) writeRecordSettling(ctx context.Context, f fence, it *item, value string, exp, at time.Time, src string, sameValue bool, curGen int64, settles bool) (*record, error) {
	same := "0"
	if sameValue {
		same = "1"
	}
	settled := ""
	if settles && it.kind == KindAccessToken {
		settled = it.appid
	}
	keys := []string{b.keys.lock(), b.keys.epoch(), b.keys.tok(it.ns), b.keys.rev(), b.keys.intent(it.ns)}
	args := []any{it.ns, it.field, curGen, same, recordTail(value, exp, at, src), b.keys.events(), settled}
	if it.kind == KindAccessToken {
		keys = append(keys, b.keys.issued(it.ns, value))
		args = append(args, issuedTTL(exp, b.now()), strconv.FormatInt(exp.UnixMilli(), 10))
	}
	out, err := b.runFenced(ctx, b.scripts.writeRecord, f, keys, args...)
	if err != nil {
		return nil, fmt.Errorf("write %s of appid %q: %w", it.kind, it.appid, err)
	}
	return &record{Rev: out[2], Gen: out[1], Value: value, ExpiresAt: exp.Truncate(time.Millisecond),
		FetchedAt: at.Truncate(time.Millisecond), Src: src}, nil
}

// writeStatus stores it's refresh status under fence f.
func (b *Broker) writeStatus(ctx context.Context, f fence, it *item, st *refreshStatus) error {
	it.status.Store(st)
	js, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	_, err = b.runFenced(ctx, b.scripts.writeStatus, f,
		[]string{b.keys.lock(), b.keys.epoch(), b.keys.status(it.ns)}, it.field, string(js))
	if err != nil {
		return fmt.Errorf("write status of appid %q: %w", it.appid, err)
	}
	return nil
}

// rejected handles a fenced-out write: count it and step down.
func (b *Broker) rejected(t *term, it *item, err error) {
	if !errors.Is(err, errFenced) {
		return
	}
	b.m.FencedWritesRejected.Inc()
	b.log.Warn("fenced write rejected; stepping down", append(itemFields(it), zap.Int64("epoch", t.epoch))...)
	t.stop(errFenced)
}

func epochString(e int64) string { return strconv.FormatInt(e, 10) }

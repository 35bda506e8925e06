package broker

import "github.com/redis/go-redis/v9"

// Every Lua script the broker runs is here, next to the store that runs
// them (store.go): nothing outside the store sends a command to Redis.

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
if KEYS[7] then
  local cur = redis.call('HGET', KEYS[7], ARGV[12])
  local seq = ''
  if cur then seq = string.match(cur, '^[^\t]*\t[^\t]*\t[^\t]*\t([^\t]*)\t') or '' end
  if seq == ARGV[13] then
    redis.call('HSET', KEYS[7], ARGV[12], ARGV[14])
    redis.call('PUBLISH', ARGV[15], ARGV[16])
  end
end
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

// preCallLua counts a credential call against the daily quota and, for a
// forced refresh, against force_min_interval and force_daily_cap; it also
// records the call's intent, so that a leader dying before it stores the
// answer leaves a trace the next leader acts on (see intent.go).
// KEYS[3] quota counter, KEYS[4] force interval marker, KEYS[5] force counter,
// KEYS[6] intent hash; ARGV[3] counter TTL (s), ARGV[4] mode ("0" plain call,
// "1" forced call, "2" only check the force budget), ARGV[5]
// force_min_interval (ms), ARGV[6] force_daily_cap, ARGV[7] intent field
// (appid; "" records none), ARGV[8] intent value.
// Returns {status, quota used, forced today}: status 0 ok, 1 ok although a
// force marker of another term was present (its call left no outcome), -1
// fenced, -2 within force_min_interval, -3 daily cap reached.
//
// The force marker holds the epoch of the term that set it. A marker set by
// another term whose call is still unsettled (its intent is in the hash) does
// not block: that leader died between its forced call and the write, so the
// token clients report is most likely the one its call killed.
const preCallLua = fenceLua + `
local fc = 0
local st = 0
if ARGV[4] ~= '0' then
  local m = redis.call('GET', KEYS[4])
  if m then
    if m == ARGV[2] or ARGV[7] == '' or redis.call('HEXISTS', KEYS[6], ARGV[7]) == 0 then return {-2, 0, 0} end
    st = 1
  end
  fc = tonumber(redis.call('GET', KEYS[5]) or '0')
  if fc >= tonumber(ARGV[6]) then return {-3, 0, fc} end
  if ARGV[4] == '2' then return {st, 0, fc} end
  fc = redis.call('INCR', KEYS[5])
  redis.call('EXPIRE', KEYS[5], ARGV[3])
  if tonumber(ARGV[5]) > 0 then redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[5]) end
end
if ARGV[7] ~= '' and ARGV[8] ~= '' then redis.call('HSET', KEYS[6], ARGV[7], ARGV[8]) end
local q = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {st, q, fc}
`

// clearIntentLua removes an intent this leader recorded, after a call that
// certainly minted nothing. KEYS[3] intent hash; ARGV[3] field, ARGV[4] the
// epoch prefix of the value.
const clearIntentLua = fenceLua + `
local v = redis.call('HGET', KEYS[3], ARGV[3])
if v and string.sub(v, 1, string.len(ARGV[4])) == ARGV[4] then redis.call('HDEL', KEYS[3], ARGV[3]) end
return {1, 0, 0}
`

// takeEpochLua hands a new leader its epoch. KEYS[1] lock, KEYS[2] epoch;
// ARGV[1] lock value, ARGV[2] highest epoch the leader knows. Returns
// {epoch, 1 when moved past the known one, else 0}, or {-1, 0} when the lock
// is not the caller's.
const takeEpochLua = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, 0} end
local e = redis.call('INCR', KEYS[2])
local known = tonumber(ARGV[2])
if e <= known then
  e = known + 1
  redis.call('SET', KEYS[2], string.format('%d', e))
  return {e, 1}
end
return {e, 0}
`

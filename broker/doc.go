// Package broker owns the WeChat credential lifecycle (docs/ARCHITECTURE.md, invariants 1-9): one
// replica, the leader elected through a Redis lock, fetches access tokens and
// tickets before they expire and writes them to Redis through fenced scripts;
// every replica serves them from an in-process cache kept current by Redis
// pub/sub and a periodic reconcile.
//
// Redis layout (every key carries the hash tag {key_prefix}, so the fencing
// scripts also run on Redis Cluster; namespaces are part of every per-app key):
//
//	{p}:lock                          leader lock (bsm/redislock), value token|instance_id
//	{p}:epoch                         fencing epoch, INCR on every new leadership (never below one seen before)
//	{p}:rev                           last write revision (orders cache updates)
//	{p}:ns:<ns>:tok                   hash <appid>/<kind> → record (rev, generation, value, expiry)
//	{p}:ns:<ns>:st                    hash <appid>/<kind> → JSON refresh status (last refresh, last error)
//	{p}:ns:<ns>:quota:<appid>:<api>:<day>   credential calls on a UTC+8 day
//	{p}:ns:<ns>:force:<appid>:<day>   forced refreshes on a UTC+8 day
//	{p}:ns:<ns>:forcelast:<appid>     present while force_min_interval runs (value: the epoch that set it)
//	{p}:ns:<ns>:intent                hash <appid> → credential call in flight (epoch, start, mode), removed by the write that stores its answer
//	{p}:events, {p}:inval, {p}:inval:done   pub/sub channels
//
// Reads (AccessToken, Ticket, AppByToken) never touch Redis. Invalidate asks
// for a conditional refresh that names the failed token; followers hand it to
// the leader through the {p}:inval channel and wait for the new token.
package broker

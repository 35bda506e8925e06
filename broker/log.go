package broker

import "go.uber.org/zap"

func zapNS(ns string) zap.Field          { return zap.String("namespace", ns) }
func zapApp(appid string) zap.Field      { return zap.String("appid", appid) }
func zapKind(kind string) zap.Field      { return zap.String("kind", kind) }
func zapErr(err error) zap.Field         { return zap.Error(err) }
func zapTok(tok string) zap.Field        { return zap.String("token_sha256", shortHash(tok)) }
func zapTokAs(key, tok string) zap.Field { return zap.String(key, shortHash(tok)) }
func itemFields(it *item) []zap.Field {
	return []zap.Field{zapNS(it.ns), zapApp(it.appid), zapKind(it.kind)}
}

package broker

import (
	"errors"
	"go/ast"
	"go/importer"
	"go/parser"
	gotoken "go/token"
	"go/types"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// maxMethods is the most methods a type of package broker may have, its
// own and those promoted from embedded types of the package (a room with
// one door, not a building: docs/ARCHITECTURE.md).
const maxMethods = 25

// TestMethodCount keeps every type of the package, in its production
// files, at maxMethods or fewer, exported and unexported methods alike.
func TestMethodCount(t *testing.T) {
	counts, err := methodCounts(".")
	if err != nil {
		t.Fatal(err)
	}
	if counts["Broker"] == 0 {
		t.Fatalf("no methods found on Broker: the counter is broken (counts: %v)", counts)
	}
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return counts[names[i]] > counts[names[j]] })
	var top []string
	for _, n := range names[:min(6, len(names))] {
		top = append(top, n+"="+itoa(counts[n]))
	}
	t.Logf("largest types: %s", strings.Join(top, ", "))
	for _, n := range names {
		if counts[n] > maxMethods {
			t.Errorf("type %s has %d methods (own and promoted); split it: at most %d", n, counts[n], maxMethods)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// methodCounts parses the non-test files of dir and returns, per type, its
// declared methods plus those promoted from embedded types declared there.
func methodCounts(dir string) (map[string]int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	fset := gotoken.NewFileSet()
	own := map[string]map[string]bool{} // type → method names
	embeds := map[string][]string{}     // type → embedded local types
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, 0)
		if err != nil {
			return nil, err
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil || len(d.Recv.List) == 0 {
					continue
				}
				typ := recvName(d.Recv.List[0].Type)
				if own[typ] == nil {
					own[typ] = map[string]bool{}
				}
				own[typ][d.Name.Name] = true
			case *ast.GenDecl:
				for _, s := range d.Specs {
					ts, ok := s.(*ast.TypeSpec)
					if !ok {
						continue
					}
					st, ok := ts.Type.(*ast.StructType)
					if !ok {
						continue
					}
					for _, fld := range st.Fields.List {
						if len(fld.Names) == 0 {
							embeds[ts.Name.Name] = append(embeds[ts.Name.Name], recvName(fld.Type))
						}
					}
				}
			}
		}
	}
	var all func(typ string, seen map[string]bool) map[string]bool
	all = func(typ string, seen map[string]bool) map[string]bool {
		out := map[string]bool{}
		if seen[typ] {
			return out
		}
		seen[typ] = true
		for m := range own[typ] {
			out[m] = true
		}
		for _, e := range embeds[typ] {
			for m := range all(e, seen) {
				out[m] = true
			}
		}
		return out
	}
	counts := map[string]int{}
	for typ := range own {
		counts[typ] = len(all(typ, map[string]bool{}))
	}
	for typ := range embeds {
		counts[typ] = len(all(typ, map[string]bool{}))
	}
	return counts, nil
}

// recvName is the type name of a receiver or embedded field expression.
func recvName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.StarExpr:
		return recvName(e.X)
	case *ast.Ident:
		return e.Name
	case *ast.IndexExpr:
		return recvName(e.X)
	case *ast.SelectorExpr:
		return e.Sel.Name
	}
	return ""
}

// roomOrder is the order of the rooms of package broker, lowest first
// (docs/ARCHITECTURE.md, rooms of package broker). A file may refer to what
// its own room and the rooms below it declare, never to what a room above
// declares: where a lower room must tell a higher one, it declares a
// function or a small interface and the higher room (or New) fills it in.
var roomOrder = []struct {
	room  string
	files []string
}{
	{"store", []string{"store.go", "store_scripts.go", "store_platform.go"}},
	{"catalog", []string{"doc.go", "kinds.go", "catalog.go", "catalog_platform.go", "log.go", "openplatform_types.go"}},
	{"core", []string{"core.go", "cluster.go", "metrics.go"}},
	{"replica", []string{"cache.go", "subscribe.go", "reconcile.go", "pause.go", "issued.go", "opcache.go"}},
	{"lease", []string{"election.go", "epoch.go", "lostlease.go"}},
	{"leader", []string{"fence.go", "intent.go", "quota.go", "verify.go", "refresh.go", "scheduler.go", "repair.go", "invalidate.go", "oprefresh.go"}},
	{"front", []string{"report.go", "status.go", "reload.go", "broker.go", "openplatform.go"}},
}

// TestRoomOrder type-checks the production files of the package and fails
// when a file refers to a type, function, method, field, variable or
// constant declared in a file of a higher room (the same room is fine).
func TestRoomOrder(t *testing.T) {
	rank := map[string]int{}
	for i, r := range roomOrder {
		for _, f := range r.files {
			rank[f] = i
		}
	}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := gotoken.NewFileSet()
	var files []*ast.File
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		if _, ok := rank[name]; !ok {
			t.Errorf("%s is in no room: add it to roomOrder (and to docs/ARCHITECTURE.md)", name)
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	// Only the standard library is imported (atomic.Pointer[T] and the like
	// must resolve their T); other imports fail, which leaves what the
	// package declares resolved, all this test looks at.
	info := &types.Info{Uses: map[*ast.Ident]types.Object{}}
	conf := types.Config{Importer: stdImports{importer.Default()}, Error: func(error) {}}
	pkg, _ := conf.Check("github.com/wxbroker/wxbroker/broker", fset, files, info)
	if pkg == nil {
		t.Fatal("type check produced no package")
	}
	fileOf := func(p gotoken.Pos) string { return filepath.Base(fset.Position(p).Filename) }
	type edge struct{ from, to string }
	back := map[edge][]string{}
	uses := 0
	for id, obj := range info.Uses {
		if obj.Pkg() != pkg || !obj.Pos().IsValid() {
			continue
		}
		switch o := obj.(type) {
		case *types.Var:
			if !o.IsField() && o.Parent() != pkg.Scope() {
				continue // a local variable or parameter
			}
		case *types.Func:
			// package functions and methods
		case *types.TypeName, *types.Const:
			if o.Parent() != pkg.Scope() {
				continue // declared inside a function
			}
		default:
			continue
		}
		from, to := fileOf(id.Pos()), fileOf(obj.Pos())
		if from == to {
			continue
		}
		uses++
		if rank[to] > rank[from] {
			e := edge{from, to}
			back[e] = append(back[e], obj.Name())
		}
	}
	if uses < 500 {
		t.Fatalf("only %d references between files found: the checker is broken", uses)
	}
	edges := make([]edge, 0, len(back))
	for e := range back {
		edges = append(edges, e)
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].from != edges[j].from {
			return edges[i].from < edges[j].from
		}
		return edges[i].to < edges[j].to
	})
	for _, e := range edges {
		names := dedupe(back[e])
		t.Errorf("%s (room %s) refers to %s (room %s, higher): %s",
			e.from, roomOrder[rank[e.from]].room, e.to, roomOrder[rank[e.to]].room, strings.Join(names, ", "))
	}
	t.Logf("%d references between files, %d back-edges", uses, len(edges))
}

// stdImports resolves the standard library only: the room test needs the
// package's own declarations, not those of its modules.
type stdImports struct{ std types.Importer }

func (s stdImports) Import(path string) (*types.Package, error) {
	if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") {
		return nil, errors.New("not resolved: " + path)
	}
	return s.std.Import(path)
}

func dedupe(s []string) []string {
	sort.Strings(s)
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

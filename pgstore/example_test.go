package pgstore_test

import (
	"context"
	"log"
	"net/http"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/pgstore"
)

// Every replica of a service runs this: they share the grant's token
// through PostgreSQL, and one of them refreshes it when it expires.
// (The example needs a database, so it is compiled but not run.)
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	store := &pgstore.Store{Pool: pool, Key: "workspace-42"}
	if err := store.CreateTable(ctx); err != nil {
		log.Fatal(err)
	}
	src := &pandadocauth.TokenSource{
		Config: &pandadocauth.Config{ClientID: os.Getenv("PANDADOC_CLIENT_ID"), ClientSecret: os.Getenv("PANDADOC_CLIENT_SECRET")},
		Store:  store, // a Locker too: refreshes are serialised across replicas
	}
	client := pandadocauth.NewClient(nil, src)

	resp, err := client.Get("https://api.pandadoc.com/public/v1/documents")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	log.Println(resp.Status)
}

// One pool serves many grants: one Store per grant, told apart by Key.
func ExampleStore_multiTenant() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	conf := &pandadocauth.Config{ClientID: os.Getenv("PANDADOC_CLIENT_ID"), ClientSecret: os.Getenv("PANDADOC_CLIENT_SECRET")}

	clients := map[string]*http.Client{}
	for _, workspace := range []string{"acme", "globex"} {
		src := &pandadocauth.TokenSource{
			Config: conf,
			Store:  &pgstore.Store{Pool: pool, Key: workspace},
		}
		clients[workspace] = pandadocauth.NewClient(nil, src)
	}
	_ = clients["acme"] // calls PandaDoc on behalf of the acme workspace
}

// Many customers' workspaces served through one pandadocauth.Grants: one
// table, one row and one lock per grant key. (The example needs a
// database, so it is compiled but not run.)
func ExampleKeyed() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	store := &pgstore.Keyed{Pool: pool}
	if err := store.CreateTable(ctx); err != nil {
		log.Fatal(err)
	}
	grants := &pandadocauth.Grants{
		Config: &pandadocauth.Config{ClientID: os.Getenv("PANDADOC_CLIENT_ID"), ClientSecret: os.Getenv("PANDADOC_CLIENT_SECRET")},
		Store:  store, // a KeyedLocker too: each grant's refreshes are serialised across replicas
	}
	defer grants.Wait()
	client := &http.Client{Transport: grants.Transport(nil)}

	req, err := http.NewRequestWithContext(pandadocauth.WithGrant(ctx, "workspace-42"), "GET", "https://api.pandadoc.com/public/v1/documents", nil)
	if err != nil {
		log.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	log.Println(resp.Status)
}

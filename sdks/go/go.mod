module github.com/ezthrottle/ezthrottle/sdks/go

go 1.19

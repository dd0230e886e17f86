"""One pytest session of the suite: the option table and the settings derived from it,
and the session object that loads the models once, runs the gates and holds the results."""

/* A shared library without atelier_plugin_entry: the host must refuse it. */
int not_an_atelier_plugin(void);
int not_an_atelier_plugin(void) { return 42; }

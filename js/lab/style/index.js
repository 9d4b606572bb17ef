import './base.css';
import '../../widgets/styles.css';
